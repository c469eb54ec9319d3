"""Switches for the optimisations that lean on library internals.

Each is on by default; CHAT_FAST_PATHS_OFF names those to turn off (or `all`), so
`make bench` can measure what each buys (docs/benchmarks.md) and an operator can rule one
out when an upgrade misbehaves. Turning one off changes speed, never behaviour.
"""

from __future__ import annotations

from django.conf import settings

# name -> what it skips (docs/operations.md lists the same).
FAST_PATHS = {
    "direct_writer": "fan-out frames written by the socket's protocol, not through ASGI send",
    "write_now": "frames framed here and sent at once, not after an event-loop pass",
    "server_send": "fan-out sends skip channels' session middleware",
    "group_send_script": "group_send in one Redis script instead of four round trips",
    "receive_batch": "the hub receives every waiting event in one Redis call",
    "quiet_autobahn": "autobahn's per-connection debug text formatted only when logged",
}


def parse_off(raw: list[str]) -> frozenset[str]:
    """CHAT_FAST_PATHS_OFF's names, checked: a typo must not leave a path on unnoticed."""
    names = {name.strip() for name in raw if name.strip()}
    if "all" in names:
        return frozenset(FAST_PATHS)
    unknown = sorted(names - FAST_PATHS.keys())
    if unknown:
        raise ValueError(
            f"CHAT_FAST_PATHS_OFF names {', '.join(unknown)}, which is not a fast path; "
            f"known: {', '.join(FAST_PATHS)} (or all)."
        )
    return frozenset(names)


def on(name: str) -> bool:
    assert name in FAST_PATHS, name
    return name not in settings.CHAT_FAST_PATHS_OFF
