"""This process's presence work: heartbeats for its entries, sweeps, batched frames.

One Tracker per event loop (kept in chat/runtime.py). It refreshes every entry this
process holds in one pipeline every TTL/3 (jittered) and sweeps the rooms it serves, so
a replica that dies without running disconnect() leaves no ghost beyond the TTL. A
room's joins and leaves go out as one presence frame per CHAT_PRESENCE_INTERVAL, from
whichever process claimed that room's flush in the store.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from django.conf import settings

from ... import metrics
from ...protocol import frames
from .. import delivery
from .interface import PresenceStore, ttl

log = logging.getLogger(__name__)


class Tracker:
    """Refreshes this process's entries, sweeps the rooms it serves, batches their news."""

    def __init__(self, store: Callable[[], PresenceStore]) -> None:
        # Called on every use, as it reads REDIS_URL (which tests change).
        self._store = store
        self.entries: dict[str, tuple[int, str]] = {}  # connection id -> (room id, username)
        self._task: asyncio.Task | None = None
        self._timers: dict[int, asyncio.TimerHandle] = {}  # rooms whose flush this process owns
        self._sweeps: dict[int, asyncio.TimerHandle] = {}  # rooms with a grace running out
        self._running: set[asyncio.Task] = set()

    def add(self, conn: str, room_id: int, username: str) -> None:
        self.entries[conn] = (room_id, username)
        metrics.PRESENCE_ENTRIES.set(len(self.entries))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, conn: str) -> None:
        self.entries.pop(conn, None)
        metrics.PRESENCE_ENTRIES.set(len(self.entries))

    async def _run(self) -> None:
        while self.entries or self._sweeps:
            interval = ttl() / 3
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            try:
                await self.beat()
            except Exception:
                log.exception("presence heartbeat failed; retrying in %.0f s", interval)

    async def beat(self) -> None:
        presence = self._store()
        entries = [(room, user, conn) for conn, (room, user) in self.entries.items()]
        back: dict[int, list[str]] = {}
        for room_id, username in await presence.refresh(entries):
            back.setdefault(room_id, []).append(username)
        for room_id in sorted({room for room, _, _ in entries} | back.keys()):
            # Also claims a flush another process took and did not live to send.
            await self.changed(room_id, back.get(room_id, []) + await presence.sweep(room_id))

    # --- batching -------------------------------------------------------------------

    async def changed(self, room_id: int, usernames: list[str]) -> None:
        """These users joined or left the room: tell it within an interval, in one frame."""
        interval = float(settings.CHAT_PRESENCE_INTERVAL)
        # The claim outlives the interval, so a process that dies holding it is replaced.
        if not await self._store().mark(room_id, usernames, hold=max(3 * interval, 1.0)):
            return
        if interval <= 0:
            await self.flush(room_id)
        elif room_id not in self._timers:
            self._timers[room_id] = asyncio.get_running_loop().call_later(
                interval, self._spawn, self.flush, room_id
            )

    async def flush(self, room_id: int) -> None:
        self._timers.pop(room_id, None)
        batch = await self._store().flush(room_id)
        if batch.pause:
            # What changes during the pause is sent when it ends (or by the next beat).
            self._timers[room_id] = asyncio.get_running_loop().call_later(
                batch.pause + 0.05, self._spawn, self._after_pause, room_id
            )
        if batch.joins or batch.leaves:
            metrics.PRESENCE_BATCH_NAMES.observe(len(batch.joins) + len(batch.leaves))
            await delivery.to_room(room_id, frames.presence_frame(batch))

    async def _after_pause(self, room_id: int) -> None:
        self._timers.pop(room_id, None)
        await self.changed(room_id, [])

    def sweep_later(self, room_id: int, delay: float) -> None:
        """Sweep the room once a grace has run out (if this process lives that long;
        otherwise the heartbeat of another one serving the room does)."""
        if room_id not in self._sweeps:
            self._sweeps[room_id] = asyncio.get_running_loop().call_later(
                delay, self._spawn, self._sweep, room_id
            )

    async def _sweep(self, room_id: int) -> None:
        self._sweeps.pop(room_id, None)
        await self.changed(room_id, await self._store().sweep(room_id))

    def _spawn(self, step: Callable[[int], Coroutine[Any, Any, None]], room_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._guarded(step(room_id)))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    @staticmethod
    async def _guarded(coro: Awaitable[None]) -> None:
        try:
            await coro
        except Exception:  # Redis down: the diff waits; the next beat or change retries
            log.warning("presence batch failed", exc_info=True)

    def close(self) -> None:
        """Forget pending timers (shutdown, tests); what they held waits in the store."""
        for handle in [*self._timers.values(), *self._sweeps.values()]:
            handle.cancel()
        self._timers.clear()
        self._sweeps.clear()
        for task in (self._task, *self._running):
            if task is not None:
                task.cancel()
