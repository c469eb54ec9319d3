"""The protocol client on asyncio `websockets`: the handshake every caller shares, a
reader that feeds a Session, and ChatClient, a whole client for the tests.

The benchmark's agents (bench/client.py, bench/storm_client.py) hold thousands of
sockets: they use `open_socket` with LEAN options and `pump`, with a Session subclass
that measures. ChatClient keeps everything a test may ask about and reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from . import protocol
from .protocol import Backoff, Session

# Sockets by the thousand: no compression, no pings, no read limit on queued frames, and
# room for a capped history page; no proxy from the environment, no User-Agent header.
LEAN: dict[str, Any] = {
    "compression": None,
    "max_size": 2**24,
    "max_queue": None,
    "ping_interval": None,
    "proxy": None,
    "user_agent_header": None,
}


async def open_socket(
    url: str,
    token: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    open_timeout: float = 60.0,
    **options: Any,
) -> ClientConnection:
    """The handshake (TCP, HTTP upgrade) with the token's bearer header; `url` as given,
    its `?v=` included (protocol.with_version)."""
    extra = {**protocol.auth_headers(token), **(headers or {})}
    return await connect(
        url, additional_headers=extra or None, open_timeout=open_timeout, **options
    )


def refused_for(exc: BaseException) -> float | None:
    """Seconds a refused handshake (503 from busy servers, 429) asked to wait, from its
    Retry-After; None for any other failure (the caller's backoff decides)."""
    if not isinstance(exc, InvalidStatus):
        return None
    response = exc.response
    return protocol.handshake_retry_after(response.status_code, response.headers)


async def send(ws: ClientConnection, frame: dict[str, Any]) -> bool:
    """Send to a socket that may be closing (its reader sees the close): False if it was."""
    try:
        await ws.send(protocol.encode(frame))
    except ConnectionClosed:
        return False
    return True


async def pump(
    ws: ClientConnection, session: Session, clock: Callable[[], Any] = time.monotonic_ns
) -> None:
    """Feed every frame of `ws` to `session` (sending what it answers) until it closes;
    the close is then on `ws.close_code` and `ws.close_reason`."""
    with contextlib.suppress(ConnectionClosed):
        async for data in ws:
            now = clock()  # the arrival, before the parsing
            answer = session.receive(protocol.decode(data), now)
            if answer is not None:
                await send(ws, answer)


class ChatClient(Session):
    """A client that keeps what a real client keeps: every chat message by id (live,
    history and resume alike), who is online, and the close codes it saw.

    With `reconnect_url`, a close with a "come back" code (protocol.COME_BACK) makes it
    reconnect there, first after the server's hint if any, and `resume` after the last id
    it saw (paging on while the reply is capped), as docs/protocol.md asks.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        name: str = "",
        reconnect_url: str | None = None,
        headers: dict[str, str] | None = None,
        version: int = protocol.VERSION,
    ):
        super().__init__(Backoff(base=0.1, cap=1.0), users=True)
        self.version = version
        self.url = url
        self.name = name
        self.reconnect_url = reconnect_url
        self.headers = {**protocol.auth_headers(token), **(headers or {})}
        self.messages: dict[int, dict] = {}  # id -> chat_message, however it arrived
        self.live: list[list[int]] = []  # per connection: ids of live chat_message frames
        self.frames: list[dict] = []
        self.closes: list[int | None] = []
        # (time.monotonic(), code, reason) of each close the client saw.
        self.close_events: list[tuple[float, int, str]] = []
        # (time.monotonic(), status, Retry-After seconds) of each refused handshake.
        self.refusals: list[tuple[float, int, float]] = []
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._conn: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._closing = False

    # --- connection -----------------------------------------------------------------

    async def join(self, attempts: int = 10) -> ChatClient:
        """connect(), and while the handshake is refused (every replica busy: 503),
        try again after its Retry-After, as a client should (docs/protocol.md)."""
        for _ in range(attempts - 1):
            try:
                return await self.connect()
            except InvalidStatus as exc:
                delay = self._refused(exc)
                if delay is None:
                    raise
                await asyncio.sleep(self.failed(delay))
        return await self.connect()

    async def connect(self, url: str | None = None) -> ChatClient:
        """Open the socket and wait for the greeting (history, user_list); a reconnect
        then sends its `resume`."""
        url = protocol.with_version(url or self.url, self.version)
        self._conn = await websockets.connect(url, additional_headers=self.headers, open_timeout=15)
        resume = self.opened()
        self.live.append([])
        greeting = await self._recv(10)
        if greeting["type"] == "error":
            raise ConnectionRefusedError(greeting)
        await self._recv(10)
        if resume is not None:
            await self.send(resume)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _recv(self, timeout: float) -> dict:
        assert self._conn is not None
        frame = protocol.decode(await asyncio.wait_for(self._conn.recv(), timeout))
        self.receive(frame, time.monotonic())
        return frame

    async def _read(self) -> None:
        assert self._conn is not None
        while True:
            try:
                frame = protocol.decode(await self._conn.recv())
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else ""
                self.closes.append(code)
                self.close_events.append((time.monotonic(), code, reason))
                await self._queue.put({"type": "_closed", "code": code})
                delay = self.closed(code, reason)
                if self._closing or not self.reconnect_url or delay is None:
                    return
                await self._reconnect(delay)
                return  # the new connection has its own reader
            answer = self.receive(frame, time.monotonic())
            await self._queue.put(frame)
            if answer is not None:
                await self.send(answer)

    async def _reconnect(self, delay: float) -> None:
        last_error: Exception | None = None
        for _ in range(50):
            await asyncio.sleep(delay)
            try:
                await self.connect(self.reconnect_url)
            except (OSError, ConnectionRefusedError, websockets.WebSocketException) as exc:
                last_error = exc
                delay = self.failed(self._refused(exc))
                continue
            return
        raise RuntimeError(f"{self.name}: could not reconnect: {last_error!r}")

    def _refused(self, exc: BaseException) -> float | None:
        """A refused handshake's Retry-After in seconds (recorded in `refusals`), or None."""
        after = refused_for(exc)
        if after is not None and isinstance(exc, InvalidStatus):
            self.refusals.append((time.monotonic(), exc.response.status_code, after))
        return after

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    # --- state (Session hooks) -------------------------------------------------------

    def on_frame(self, frame: dict, now: Any) -> None:
        self.frames.append(frame)

    def on_message(self, message: dict, now: Any, live: bool) -> None:
        self.messages[message["id"]] = message
        if live:
            self.live[-1].append(message["id"])

    # --- talking ---------------------------------------------------------------------

    async def send(self, frame: dict) -> None:
        assert self._conn is not None
        await self._conn.send(protocol.encode(frame))

    async def say(self, text: str) -> dict:
        """Send a room message and return it as stored (its echo, with the id)."""
        await self.send(protocol.chat_message(text))
        return await self.next("chat_message", lambda f: f["message"] == text)

    async def resume(self, after: int, timeout: float = 15) -> list[dict]:
        """Every stored message after `after`, asked for page by page."""
        stored: list[dict] = []
        ask: dict | None = protocol.resume(after)
        while ask is not None:
            await self.send(ask)
            page = await self.next("history", lambda f: f.get("reason") == "resume", timeout)
            stored += page["messages"]
            ask = protocol.next_page(page)
        return stored

    async def next(
        self, kind: str, match: Callable[[dict], bool] | None = None, timeout: float = 10
    ) -> dict:
        """The next frame of `kind` (that `match` accepts), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                frame = await asyncio.wait_for(self._queue.get(), left)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.name}: no {kind} frame within {timeout} s; "
                    f"last frames: {self.frames[-4:]}, closes: {self.closes}"
                ) from None
            if frame["type"] == kind and (match is None or match(frame)):
                return frame

    async def until(self, check: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
        """Wait until `check()` holds (the reader keeps the state current)."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: {what or 'condition'} not met in {timeout} s")
            await asyncio.sleep(0.05)


async def close_all(clients: list[ChatClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
