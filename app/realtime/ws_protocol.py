"""daphne's WebSocket protocol with the changes the chat needs of it.

Tracks daphne 4.2's WebSocketProtocol (`serverSend`, `serverClose`), autobahn 26.10
(`sendData`, `_perMessageCompress`, `send_queue`, `trackedTimings`, the module's
`pformat`) and Twisted 26.10's tcp.Connection buffers (`dataBuffer`, `offset`,
`_tempDataLen`, `_writeDisconnected`); realtime/pins.py checks all three. The public
seams that would replace it: a close-code allowance in autobahn, a non-buffering write in
Twisted, and an ASGI extension for pre-framed sends in daphne.

Close codes: autobahn lets applications close only with 1000 and 3000–4999, so a
consumer's close(1013) or the drain's 1012 would reach the client as 1011 (or nothing).

Writes: a frame goes to the socket at once when nothing is queued ahead of it, as
asyncio's own transports do. Twisted's `transport.write` only buffers and registers the
socket with the event loop, and the loop sends and unregisters it a pass later: two
`epoll_ctl` calls, a loop pass and a page of Python per frame, a large share of a
replica's CPU when one message fans out to many sockets (docs/benchmarks.md, "What
changed: the write path").
autobahn's `sendData` also formats a debug line per frame whether debug is on or not.
Whatever cannot go at once (a full socket buffer, an error) is left to Twisted's
buffering, which then keeps the order and applies its back-pressure and error handling.

Application frames: a message the application sends is framed here (RFC 6455 §5.2: one
unmasked, unfragmented frame) rather than by autobahn's general sendMessage/sendFrame,
which weigh every option per call. Whenever one of those options is on (compression,
fragmentation, masking, frame logging) autobahn does it as before. autobahn's traffic
statistics, which nothing in daphne or here reads, are not kept on that path.

Denial responses: daphne 4.2 lacks ASGI's "Websocket Denial Response" extension (asgiref's
docs/extensions.rst; uvicorn and hypercorn have it): an application can only accept a
handshake or close it, which daphne answers with a bare 403. This protocol offers it
(DENIAL_RESPONSE in the scope's extensions, realtime/daphne_server.py): the application
sends `websocket.http.response.start` and `.body` instead of accepting, and the client (or
nginx, which can then try another replica) gets that HTTP response, such as admission
control's 503 with Retry-After. It goes the way daphne's own 403 goes (`serverReject`:
autobahn's `failHandshake`), with the application's status, headers and body. Tracks
daphne's `handle_reply` and `serverReject` and autobahn's `failHandshake` and
`sendHttpErrorResponse`; the public seam would be the extension in daphne (daphne#486).

Handshakes: autobahn pretty-prints every connection's options for a debug line whether
debug is on or not (`pformat` in `_connectionMade`), a visible share of a join's CPU in
a storm (docs/benchmarks.md, "What the storm's profiles changed");
`quiet_debug_formatting` makes its module's `pformat` lazy.
"""

from __future__ import annotations

import contextlib
import logging
import re
import struct
from http import HTTPStatus
from pprint import pformat

from autobahn.websocket import protocol as autobahn_protocol
from autobahn.websocket.types import ConnectionDeny
from daphne.ws_protocol import WebSocketProtocol
from django.conf import settings
from twisted.internet import reactor, tcp

from chat.metrics import FRAMES_QUEUED, SLOW_DISCONNECTS
from chat.protocol import closes

from .frames import TextFrame, frame

log = logging.getLogger("chat.ws")

# Seconds the 4008 close frame gets to reach a slow reader before the TCP connection is
# aborted and the backlog freed.
SLOW_CLOSE_FLUSH_SECONDS = 5.0

# Registered close codes a server sends that autobahn's sendClose() refuses (it allows
# applications only 1000 and 3000–4999): going away, policy, internal error, service
# restart, try again later, bad gateway.
SERVER_CLOSE_CODES = frozenset({1001, 1008, 1011, 1012, 1013, 1014})

# The ASGI extension this protocol implements for daphne (see the module docstring).
DENIAL_RESPONSE = "websocket.http.response"
# An HTTP header name (RFC 9110 token); values may not break the header block.
HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
HEADER_BREAK = re.compile(rb"[\r\n\0]")


class Denial:
    """An HTTP response an application sends instead of accepting a handshake: the
    `websocket.http.response.start` message's status and headers, then the body."""

    __slots__ = ("body", "complete", "headers", "status")

    def __init__(self, message: dict) -> None:
        status = message.get("status")
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError(f"a denial response's status must be 200-599, not {status!r}")
        headers = [tuple(pair) for pair in message.get("headers", ())]
        for name, value in headers:
            if not (isinstance(name, bytes) and isinstance(value, bytes)):
                raise ValueError(f"header {name!r}: names and values must be bytes")
            if not HEADER_NAME.fullmatch(name) or HEADER_BREAK.search(value):
                raise ValueError(f"header {name!r}: not a valid HTTP header")
        self.status = status
        self.headers: list[tuple[bytes, bytes]] = headers
        self.body = b""
        self.complete = False

    @property
    def phrase(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Refused"

    def wire(self) -> bytes:
        """The whole response; the connection closes after it (so it says so)."""
        given = {name.lower() for name, _ in self.headers}
        headers = list(self.headers)
        if b"content-length" not in given:
            headers.append((b"Content-Length", str(len(self.body)).encode()))
        if b"connection" not in given:
            headers.append((b"Connection", b"close"))
        head = [f"HTTP/1.1 {self.status} {self.phrase}".encode()]
        head += [name + b": " + value for name, value in headers]
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body


class LazyFormat:
    """pformat(value), computed only if a log observer renders the line."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return pformat(self.value)

    __repr__ = __str__

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def quiet_debug_formatting() -> None:
    """Make autobahn's per-connection debug formatting lazy (see the module docstring)."""
    autobahn_protocol.pformat = LazyFormat
    # The one place where autobahn wants the string itself.
    autobahn_protocol.Timings.__str__ = lambda timings: pformat(timings._timings)


def write_now(transport, data: bytes) -> None:
    """Send `data` on a plain TCP transport now if nothing waits; buffer the rest.

    Frames that had to wait are counted (`chat_ws_frames_queued_total`): a reader that
    keeps the count rising is slow or stalled, and its backlog lives in this process
    (bounded by ChatWebSocketProtocol: CHAT_WS_MAX_BUFFER).
    """
    if (
        not isinstance(transport, tcp.Connection)  # TLS wraps it: leave that to Twisted
        or not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
    ):
        transport.write(data)
        return
    sent = 0
    if not (transport.dataBuffer or transport._tempDataLen):  # nothing waits ahead of it
        # Would block, or the peer is gone: Twisted's own write handles both its way.
        with contextlib.suppress(OSError):
            sent = transport.socket.send(data)
    if sent < len(data):
        FRAMES_QUEUED.inc()
        transport.write(data[sent:] if sent else data)


def pending_bytes(transport) -> int:
    """Bytes Twisted holds for `transport` that the kernel has not taken yet."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:  # not a FileDescriptor transport (TLS wrapper): not counted
        return 0


class ChatWebSocketProtocol(WebSocketProtocol):
    # Set once this socket's backlog passed CHAT_WS_MAX_BUFFER: nothing more is queued
    # for it; it gets the 4008 close frame and is aborted if that cannot flush.
    too_slow = False
    # Frames here and sends at once (fast path `write_now`); set by the server at start.
    writes_now = True
    # The application's HTTP answer to the handshake, while it is being sent.
    denial: Denial | None = None

    def handle_reply(self, message: dict) -> None:
        """daphne's messages, plus the denial response's two (see the module docstring)."""
        kind = message.get("type")
        if kind == "websocket.http.response.start":
            if self.state != self.STATE_CONNECTING or self.denial is not None:
                raise ValueError(
                    "websocket.http.response.start after the handshake was answered: "
                    "a denial response replaces websocket.accept and websocket.close"
                )
            self.denial = Denial(message)
        elif kind == "websocket.http.response.body":
            if self.denial is None or self.denial.complete:
                raise ValueError(
                    "websocket.http.response.body without a websocket.http.response.start"
                )
            body = message.get("body", b"")
            if not isinstance(body, bytes):
                raise ValueError("websocket.http.response.body: the body must be bytes")
            self.denial.body += body
            if not message.get("more_body", False):
                self.serverDeny()
        elif self.denial is not None:
            raise ValueError(f"{kind} after a denial response: the handshake was refused")
        else:
            super().handle_reply(message)

    def serverDeny(self) -> None:
        """daphne's serverReject with the application's response instead of a 403:
        autobahn fails the handshake, and its error response (sendHttpErrorResponse,
        below) is ours; then it drops the connection."""
        assert self.denial is not None
        self.denial.complete = True
        self.handshake_deferred.errback(
            ConnectionDeny(code=self.denial.status, reason=self.denial.phrase)
        )
        del self.handshake_deferred
        self.server.protocol_disconnected(self)
        self.server.log_action(
            "websocket",
            "rejected",
            {
                "path": self.request.path,
                "client": "{}:{}".format(*self.client_addr) if self.client_addr else None,
            },
        )

    def sendHttpErrorResponse(self, code, reason, responseHeaders=None) -> None:
        if self.denial is not None and self.denial.complete:
            self.sendData(self.denial.wire())
            return
        super().sendHttpErrorResponse(code, reason, responseHeaders)

    def _write(self, data: bytes) -> None:
        """Every byte for this socket passes here: the backlog stays bounded."""
        if self.too_slow:
            return
        if self.writes_now:
            write_now(self.transport, data)
        else:
            self.transport.write(data)
        if pending_bytes(self.transport) > settings.CHAT_WS_MAX_BUFFER:
            self._close_too_slow()

    def _close_too_slow(self) -> None:
        """A reader that takes less than it is sent would grow this process without
        bound (a stalled socket, a phone on a bad link in a busy room): stop queueing for
        it and close with 4008; its client reconnects and `resume`s what it missed."""
        self.too_slow = True
        SLOW_DISCONNECTS.inc()
        log.warning(
            "closing a WebSocket that is too slow: %d bytes waiting (CHAT_WS_MAX_BUFFER=%d)",
            pending_bytes(self.transport),
            settings.CHAT_WS_MAX_BUFFER,
        )
        if self.state == self.STATE_OPEN:
            # Straight to the transport (past _write): it queues behind the backlog.
            self.transport.write(frame(0x8, struct.pack("!H", closes.TOO_SLOW) + b"too slow"))
            self.state = self.STATE_CLOSING
        # loseConnection would wait for the backlog to flush, which may be never.
        reactor.callLater(SLOW_CLOSE_FLUSH_SECONDS, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.transport is not None and self.transport.connected:
            self.transport.abortConnection()

    def _frames_here(self, size: int) -> bool:
        """Whether a message of `size` payload bytes is framed here: none of autobahn's
        options is on, and autobahn would not refuse its size (it does that its way)."""
        return self.writes_now and not (
            self._perMessageCompress is not None
            or self.autoFragmentSize
            or self.maskServerFrames
            or self.logFrames
            or self.trackedTimings
            or self.send_queue
            or 0 < self.maxMessagePayloadSize < size
        )

    def write_frame(self, framed: TextFrame) -> bool:
        """Write a fan-out frame now, without the ASGI send's per-call machinery: the
        frame writer this protocol offers the application (realtime/asgi_send.py). False
        if the socket is no longer open (the frame is dropped, as daphne drops a send to
        a closed socket)."""
        if self.state != self.STATE_OPEN:
            return False
        if self._frames_here(framed.size):
            self._write(framed.wire)
        else:
            super().serverSend(framed.text, False)
        return True

    def serverSend(self, content, binary=False):
        if self.state == self.STATE_OPEN:
            payload = content if binary else content.encode()
            if self._frames_here(len(payload)):
                self._write(frame(0x2 if binary else 0x1, payload))
                return
        super().serverSend(content, binary)

    def serverClose(self, code=None, reason: str | None = None):
        """Close with `code`; `reason` (the drain's reconnect hint, docs/protocol.md) goes
        in the close frame for the codes sent here, cut to the 123 bytes a frame allows."""
        if code in SERVER_CLOSE_CODES:
            reason_bytes = reason.encode()[:123] if reason else None
            # What daphne itself does for 1011, with the reason.
            self.sendCloseFrame(code=code, reasonUtf8=reason_bytes, isReply=False)
        else:
            super().serverClose(code)

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if sync or chopsize or self.send_queue:  # autobahn's trickled writes: its own way
            super().sendData(data, sync, chopsize)
            return
        self._write(data)
        if self.state == self.STATE_OPEN:
            self.trafficStats.outgoingOctetsWireLevel += len(data)
        elif self.state in (self.STATE_CONNECTING, self.STATE_PROXY_CONNECTING):
            self.trafficStats.preopenOutgoingOctetsWireLevel += len(data)
        if self.logOctets:
            self.logTxOctets(data, False)
