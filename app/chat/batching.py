"""Calls that arrive together, sent together.

A join storm or a drain makes thousands of the same small Redis call at once (a presence
script, a socket slot, a group membership); one by one they queue for a few connections
on a busy loop, each a round trip. A Coalescer queues them while a batch is out and sends
the queue as the next batch: a burst costs a few round trips, and a quiet process still
sends each call at once. One per event loop and kind of call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")

# What a batch sends: the items, in order; back, one result (or exception) per item.
Send = Callable[[list[Item]], Awaitable[Sequence[object]]]


class Coalescer(Generic[Item]):
    def __init__(self, send: Send, most: int) -> None:
        self._send = send
        self._most = most  # items per batch, at most
        self._queue: list[tuple[Item, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def call(self, item: Item) -> object:
        done = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self._most]
            del self._queue[: self._most]
            try:
                results = await self._send([item for item, _ in batch])
            except Exception as exc:  # the connection or the pool: every call fails alike
                results = [exc] * len(batch)
            for (_, done), result in zip(batch, results, strict=True):
                if done.done():  # its caller was cancelled
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)
