"""Every WebSocket close code a client meets, with its meaning: one table.

A refusal at connect is explained by an error frame first and then closed with the code
its error maps to (`for_refusal`). Some codes are sent by the server process rather than
the consumer — 1009 by autobahn, 1011 by daphne, 1012 by realtime/daphne_server.py's drain,
4008 by realtime/ws_protocol.py — and are listed here all the same: this is what a client sees.
docs/protocol.md ("Close codes") lists the same; tests/core checks that it does.
"""

from __future__ import annotations

from dataclasses import dataclass

NORMAL = 1000
MESSAGE_TOO_BIG = 1009
INTERNAL_ERROR = 1011
SERVICE_RESTART = 1012
TRY_AGAIN_LATER = 1013
TOO_SLOW = 4008
REFUSED = 4400
NOT_AUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
NAME_TAKEN = 4409
RATE_LIMITED = 4429


@dataclass(frozen=True, slots=True)
class Close:
    meaning: str
    # The error codes (errors.CODES) whose refusal at connect closes with this code.
    errors: tuple[str, ...] = ()


CLOSES: dict[int, Close] = {
    NORMAL: Close("the client's own close: its user leaves presence without a grace"),
    MESSAGE_TOO_BIG: Close("a single inbound frame over inbound.MAX_FRAME_BYTES"),
    INTERNAL_ERROR: Close("the server failed the connection (a crash): reconnect and resume"),
    SERVICE_RESTART: Close("the server is draining: reconnect after the reason's hint, resume"),
    TRY_AGAIN_LATER: Close(
        "a dependency is down, or this process is busy: reconnect later and resume",
        ("unavailable", "overloaded"),
    ),
    TOO_SLOW: Close("the socket read too slowly (CHAT_WS_MAX_BUFFER): reconnect and resume"),
    REFUSED: Close("any other refusal at connect: an unknown ?v=", ("unsupported_version",)),
    NOT_AUTHENTICATED: Close("the bearer token is not valid", ("not_authenticated",)),
    FORBIDDEN: Close("a staff-only room for a non-staff user", ("forbidden",)),
    NOT_FOUND: Close("an invalid room name, or an unknown room", ("not_found",)),
    NAME_TAKEN: Close("a new room's name looks like an existing room's", ("name_taken",)),
    RATE_LIMITED: Close(
        "too many sockets or rooms created: do not retry at once", ("rate_limited",)
    ),
}

_REFUSALS = {error: code for code, close in CLOSES.items() for error in close.errors}


def for_refusal(error_code: str) -> int:
    """The close code of a refusal at connect, by its error code (else REFUSED)."""
    return _REFUSALS.get(error_code, REFUSED)
