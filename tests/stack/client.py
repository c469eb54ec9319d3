"""A protocol client for the stack tests, on the `websockets` library.

It keeps what a real client keeps: every chat message by id (live, history and resume
alike), who is online (user_list, then presence frames; user_join/user_leave on protocol
1), and the close codes it saw.
With `reconnect_url`, a close with a "come back" code (1012 restart, 1013 try again,
1001 going away, 1006 dropped) makes it reconnect there — first after the close reason's
delay hint, if any — and send `resume` after the last id it saw, as the protocol asks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Callable

import websockets

COME_BACK = {1001, 1006, 1011, 1012, 1013, 4008}


def retry_hint(reason: str) -> float | None:
    """Seconds from a drain's close reason, `retry_after_ms=<n>` (docs/protocol.md)."""
    found = re.fullmatch(r"retry_after_ms=(\d+)", reason or "")
    return int(found.group(1)) / 1000 if found else None


class ChatClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        name: str = "",
        reconnect_url: str | None = None,
        headers: dict[str, str] | None = None,
        version: int = 2,
    ):
        self.version = version  # the protocol version asked for (docs/protocol.md)
        self.url = url
        self.name = name
        self.reconnect_url = reconnect_url
        self.headers = dict(headers or {})
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.messages: dict[int, dict] = {}  # id -> chat_message, however it arrived
        self.live: list[list[int]] = []  # per connection: ids of live chat_message frames
        self.frames: list[dict] = []
        self.users: set[str] = set()
        self.closes: list[int | None] = []
        # (time.monotonic(), code, reason) of each close the client saw.
        self.close_events: list[tuple[float, int, str]] = []
        self.connections = 0
        self._queue: asyncio.Queue[dict] = asyncio.Queue()
        self._conn = None
        self._reader: asyncio.Task | None = None
        self._closing = False

    # --- connection -----------------------------------------------------------------

    async def connect(self, url: str | None = None) -> ChatClient:
        """Open the socket and wait for the greeting (history, user_list)."""
        url = url or self.url
        url += f"{'&' if '?' in url else '?'}v={self.version}"
        self._conn = await websockets.connect(url, additional_headers=self.headers, open_timeout=15)
        self.connections += 1
        self.live.append([])
        greeting = await self._recv_raw(10)
        if greeting["type"] == "error":
            self._handle(greeting)
            raise ConnectionRefusedError(greeting)
        self._handle(greeting)
        self._handle(await self._recv_raw(10))
        self._reader = asyncio.create_task(self._read())
        return self

    async def _recv_raw(self, timeout: float) -> dict:
        return json.loads(await asyncio.wait_for(self._conn.recv(), timeout))

    async def _read(self) -> None:
        while True:
            try:
                frame = json.loads(await self._conn.recv())
            except websockets.ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                reason = exc.rcvd.reason if exc.rcvd else ""
                self.closes.append(code)
                self.close_events.append((time.monotonic(), code, reason))
                await self._queue.put({"type": "_closed", "code": code})
                if self._closing or not self.reconnect_url or code not in COME_BACK:
                    return
                await self._reconnect(retry_hint(reason))
                return  # the new connection has its own reader
            self._handle(frame)
            await self._queue.put(frame)

    async def _reconnect(self, first_delay: float | None = None) -> None:
        """Reconnect, first after the server's hint (a drain's close reason) if any."""
        last_error: Exception | None = None
        for attempt in range(50):
            if attempt == 0 and first_delay is not None:
                await asyncio.sleep(first_delay)
            else:
                await asyncio.sleep(min(0.1 * (attempt + 1), 1.0))
            try:
                await self.connect(self.reconnect_url)
            except (OSError, ConnectionRefusedError, websockets.WebSocketException) as exc:
                last_error = exc
                continue
            await self.send({"type": "resume", "after": self.last_id})
            return
        raise RuntimeError(f"{self.name}: could not reconnect: {last_error!r}")

    async def close(self) -> None:
        self._closing = True
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)

    # --- state ---------------------------------------------------------------------------

    def _handle(self, frame: dict) -> None:
        self.frames.append(frame)
        kind = frame["type"]
        if kind == "history":
            for message in frame["messages"]:
                self.messages[message["id"]] = message
        elif kind == "chat_message":
            self.messages[frame["id"]] = frame
            self.live[-1].append(frame["id"])
        elif kind == "user_list":
            self.users = set(frame["users"])
        elif kind == "user_join":
            self.users.add(frame["user"])
        elif kind == "user_leave":
            self.users.discard(frame["user"])
        elif kind == "presence":
            self.users.update(frame["joins"])
            self.users.difference_update(frame["leaves"])

    @property
    def last_id(self) -> int:
        return max(self.messages, default=0)

    # --- talking ---------------------------------------------------------------------

    async def send(self, frame: dict) -> None:
        await self._conn.send(json.dumps(frame))

    async def say(self, text: str) -> dict:
        """Send a room message and return it as stored (its echo, with the id)."""
        await self.send({"type": "chat_message", "message": text})
        return await self.next("chat_message", lambda f: f["message"] == text)

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
