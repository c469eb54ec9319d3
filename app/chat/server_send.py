"""The server's own `send`, kept in the scope for fan-out frames.

channels' SessionMiddleware wraps `send` so that a session changed during the handshake
is saved on accept; every later send still passes through it and reads the lazy session
twice. For a room of 1,000 that was about 14 % of a replica's CPU (docs/benchmarks.md).
Fan-out frames (services/fanout.py via ChatConsumer._relay) never touch the session, so
they use the server's send, or under daphne the protocol's direct write; everything else
keeps the wrapped one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

SCOPE_KEY = "chat.server_send"


class KeepServerSend:
    """Outermost WebSocket middleware: put the server's `send` in the scope."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        return await self.application({**scope, SCOPE_KEY: send}, receive, send)


def server_send(scope, fallback):
    """The server's send if KeepServerSend is outermost, else `fallback`."""
    return scope.get(SCOPE_KEY) or fallback


def direct_writer(send) -> Callable[[str], bool] | None:
    """A synchronous write of a text frame straight to the socket, when `send` is
    daphne's own for a protocol that offers one (config/ws_protocol.py); else None.

    daphne's send is `partial(Server.handle_reply, protocol)`; each call is a coroutine,
    a message dict and two dispatches before the frame is written. For a room's fan-out,
    once per socket per message, the hub writes through this instead.
    """
    if isinstance(send, functools.partial) and send.args:
        return getattr(send.args[0], "write_text", None)
    return None
