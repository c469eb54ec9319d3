"""How a fan-out frame reaches a socket: the server's frame writer, or its own `send`.

Under daphne (realtime/daphne_server.py) every WebSocket's scope carries the FRAME_WRITER
ASGI extension: `{"write": callable}` that writes a frame framed once for all sockets
(realtime/ws_protocol.TextFrame) synchronously, skipping `send`'s coroutine chain and the
middleware wrapped around it. Under any other server (the test communicator, uvicorn) the
extension is absent and fan-out uses `send`.

Even then it need not pass through channels' SessionMiddleware, which wraps `send` so a
session changed during the handshake is saved on accept, and reads the lazy session on
every later send: KeepServerSend, outermost, keeps the server's own `send` in the scope.
Tracks channels 4.3's SessionMiddleware (realtime/pins.py); the public seam would be a
session middleware that unwraps itself after accept.
"""

from __future__ import annotations

from collections.abc import Callable

from . import fast_paths

SCOPE_KEY = "chat.server_send"
FRAME_WRITER = "chat.frame_writer"


class KeepServerSend:
    """Outermost WebSocket middleware: put the server's `send` in the scope."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        return await self.application({**scope, SCOPE_KEY: send}, receive, send)


def server_send(scope, fallback):
    """The server's send if KeepServerSend is outermost (and on), else `fallback`."""
    if not fast_paths.on("server_send"):
        return fallback
    return scope.get(SCOPE_KEY) or fallback


def frame_writer(scope) -> Callable[[object], bool] | None:
    """The server's synchronous frame writer for this socket, if it offers one."""
    extension = scope.get("extensions", {}).get(FRAME_WRITER)
    return extension.get("write") if extension else None
