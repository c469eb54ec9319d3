"""One chat WebSocket on websocket-client (blocking sockets that gevent makes cooperative).

Every operation is a Locust request event, with low-cardinality names:

    WS      connect          handshake (TCP + HTTP upgrade through nginx to a replica)
    WS      join             handshake until the `user_list` that ends the join
    WS      send <type>      writing one frame
    WS      resume           a `resume` request until its `history` reply
    WS      close            the server closed the socket (exception: the close code)
    ERROR   <code>           an error frame from the server, one row per code
    DELIVER fanout|private   see tracking.py

Every received frame is parsed; one that is not a JSON object is a failure (`WS
frame`). A greenlet reads the socket, hands each frame to chatclient's protocol Session
(the protocol logic the stack tests and the benchmark share, without I/O: Locust runs
on gevent, not asyncio) and then to the owner's `on_frame`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import gevent
import websocket
from chatclient import protocol
from gevent.event import AsyncResult, Event
from locust.env import Environment

from .tracking import fire

log = logging.getLogger(__name__)


class ServerClosed(Exception):
    """The server closed the socket; the message is the close code."""


class ErrorFrame(Exception):
    """An `error` frame; the message is its code."""


class HandshakeFailed(Exception):
    pass


class ChatSocket(protocol.Session):
    def __init__(
        self,
        environment: Environment,
        base_url: str,
        room: str,
        token: str,
        on_frame: Callable[[dict, float], None],
    ):
        super().__init__()
        self.environment = environment
        self.url = protocol.room_url(base_url, room)  # protocol 2: batched presence frames
        self.room = room
        self.token = token
        self.owner_frame = on_frame
        self.ws: websocket.WebSocket | None = None
        self.joined_event = Event()
        self.closed_event = Event()
        self.closing = False
        self.join_history: list[dict] = []
        self.close_code: int | None = None
        self._reply: AsyncResult | None = None
        self._reader: gevent.Greenlet | None = None

    # --- lifecycle -------------------------------------------------------------------

    def connect(self, timeout: float = 30.0) -> bool:
        """Open, then wait for the join to finish; False (reported) when either fails."""
        started = time.time()
        try:
            ws = websocket.WebSocket(enable_multithread=True)
            ws.connect(
                self.url,
                header=[f"{k}: {v}" for k, v in protocol.auth_headers(self.token).items()],
                timeout=timeout,
                suppress_origin=True,
            )
            ws.settimeout(None)
        except websocket.WebSocketBadStatusException as exc:
            # Every replica busy (503) or a proxy's limit (429): its Retry-After says when.
            self.refused_for = protocol.handshake_retry_after(
                exc.status_code, exc.resp_headers or {}
            )
            self._report("connect", started, HandshakeFailed(f"HTTP {exc.status_code}"))
            return False
        except Exception as exc:
            self._report("connect", started, HandshakeFailed(type(exc).__name__))
            return False
        self._report("connect", started)
        self.ws = ws
        self.opened()
        self._reader = gevent.spawn(self._read)
        gevent.wait([self.joined_event, self.closed_event], timeout=timeout, count=1)
        if not self.joined_event.is_set():
            why = f"close {self.close_code}" if self.closed_event.is_set() else "no user_list"
            self._report("join", started, HandshakeFailed(why))
            self.close()
            return False
        self._report("join", started)
        return True

    def close(self) -> None:
        self.closing = True
        ws = self.ws
        if ws is not None:
            try:
                ws.close(timeout=2)
            except Exception:
                ws.shutdown()
        if self._reader is not None and self._reader is not gevent.getcurrent():
            self._reader.join(timeout=3)
            self._reader.kill(block=False)
        self.closed_event.set()

    @property
    def open(self) -> bool:
        return self.ws is not None and not self.closed_event.is_set()

    # --- outbound --------------------------------------------------------------------

    def send(self, frame: dict) -> bool:
        name = f"send {frame.get('type', 'chat_message')}"
        if not self.open:
            return False
        started = time.time()
        text = protocol.encode(frame)
        try:
            self.ws.send(text)
        except Exception as exc:
            self._report(name, started, exc)
            return False
        self._report(name, started, length=len(text))
        return True

    def request(self, frame: dict, name: str, timeout: float) -> dict | None:
        """Send a `resume`/`history` request and wait for its `history` reply."""
        self._reply = AsyncResult()
        started = time.time()
        if not self.send(frame):
            return None
        try:
            reply = self._reply.get(timeout=timeout)
        except gevent.Timeout:
            self._report(name, started, TimeoutError(f"no reply in {timeout:g} s"))
            return None
        self._report(name, started, length=len(reply.get("messages", ())))
        return reply

    def resume(self, after: int, deadline: float) -> list[dict] | None:
        """Every stored message after `after`, following `has_more` page by page."""
        stored: list[dict] = []
        ask: dict | None = protocol.resume(after)
        while ask is not None:
            left = deadline - time.time()
            if left <= 0:
                return None
            reply = self.request(ask, "resume", left)
            if reply is None:
                return None
            stored.extend(reply.get("messages", []))
            ask = protocol.next_page(reply)
        return stored

    # --- inbound ---------------------------------------------------------------------

    def _read(self) -> None:
        ws = self.ws
        assert ws is not None
        while True:
            try:
                opcode, data = ws.recv_data()
            except Exception as exc:
                if not self.closing:
                    self._report("close", time.time(), ServerClosed(f"lost: {type(exc).__name__}"))
                break
            arrived = time.time()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
                self.close_code = code
                if not self.closing:
                    self._report("close", arrived, ServerClosed(str(code)))
                break
            try:
                frame = protocol.decode(data)
            except ValueError:
                self._report("frame", arrived, ValueError("not a JSON object"))
                continue
            self.receive(frame, arrived)
            self.owner_frame(frame, arrived)
        self.closed_event.set()
        if self._reply is not None and not self._reply.ready():
            self._reply.set({"messages": [], "closed": True})

    # --- Session hooks ---------------------------------------------------------------

    def on_history(self, frame: dict, now: Any) -> None:
        if frame.get("reason") == "join":
            self.join_history = frame.get("messages", [])
        elif self._reply is not None and not self._reply.ready():
            self._reply.set(frame)

    def on_joined(self, now: Any) -> None:
        self.joined_event.set()

    def on_error(self, frame: dict, now: Any) -> None:
        code = str(frame.get("code"))
        fire(self.environment, code, 0, ErrorFrame(code), request_type="ERROR")

    def _report(
        self, name: str, started: float, exc: Exception | None = None, length: int = 0
    ) -> None:
        fire(self.environment, name, (time.time() - started) * 1000, exc, "WS", length)
