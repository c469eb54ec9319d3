"""Protocol versions: which one a client speaks, from the WebSocket URL's `?v=N`.

Version 2 batches presence (one `presence` frame per room per interval); version 1, the
default for one more release, gets the same news as `user_join` / `user_leave` frames
(frames.legacy_presence_frames). docs/protocol.md ("Versions") describes the same.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from .errors import ChatError

LATEST = 2
VERSIONS = (1, 2)
DEFAULT_VERSION = 1


def version(query_string: bytes | str) -> int:
    """The protocol version a WebSocket URL's query asks for."""
    if isinstance(query_string, bytes):
        query_string = query_string.decode("latin-1")
    values = parse_qs(query_string).get("v")
    if not values:
        return DEFAULT_VERSION
    if len(values) == 1 and values[0] in {str(v) for v in VERSIONS}:
        return int(values[0])
    supported = ", ".join(str(v) for v in VERSIONS)
    raise ChatError(
        "unsupported_version", f"Unknown protocol version; ask for one of {supported} with ?v=N."
    )
