"""One channel-layer subscription per process, fanned out to the sockets it serves.

channels gives every consumer a channel of its own: a message to a room of 1,000 then
wakes 1,000 receive loops, each with its own tasks, lock and dispatch, and that — not
Redis, not the network — is what limited fan-out (docs/benchmarks.md). Here a process
joins each group once, with one channel, and one receive loop hands the frame's text,
serialized once by services/delivery.py, straight to every local member's socket.

With a sharded core layer (REDIS_LAYER_URLS) the hub keeps one channel per server and
adds each group to the channel on the group's own server, so a room's membership and its
queue share a server; when one server is lost, only the members of groups it holds are
closed (1013), and the rest carry on.

The hub belongs to one event loop (daphne has one; each test has its own), which keeps
it in chat/runtime.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from channels.layers import get_channel_layer

from realtime import fast_paths
from realtime.frames import TextFrame, text_frame
from realtime.layers import LAYER_LOST

from .. import metrics, runtime
from ..batching import Coalescer
from ..protocol import frames
from . import delivery

log = logging.getLogger(__name__)

# channels_redis forgets a group member after `group_expiry` (a day by default); the hub
# stays a member of the groups it serves by joining them again well before that.
REFRESH_SECONDS = 3600.0
# After the layer fails, wait this long before listening again.
RETRY_SECONDS = 1.0
# At most this long to stop listening.
CLOSE_SECONDS = 2.0
# Group memberships changed with the channel layer at once (see _layer_call): in one
# pipeline with the core layer, else at most this many calls at a time.
CHANGES_PER_BATCH = 1000
LAYER_CALLS = 16
# Frames that do not change a room's history (a newcomer's read of it stays good).
QUIET_KINDS = frozenset({"presence", "typing"})
_versions = itertools.count(1)


@dataclass(eq=False)
class Member:
    """One WebSocket connection as the hub sees it.

    Frames that arrive before the connection has sent its greeting (history, online
    list) wait in `pending`, so a client never sees live traffic ahead of the history it
    belongs after.
    """

    conn_id: str
    username: str | None
    send: Callable[[str], Awaitable[None]]
    fail: Callable[[Exception], Awaitable[None]]
    pending: list[str] | None = field(default_factory=list)
    groups: set[str] = field(default_factory=set)  # the hub's groups this member is in
    # Writes a frame now, synchronously; False if the socket has closed. Where the server
    # offers one (realtime/asgi_send.py): the live path skips `send`'s coroutine chain.
    write: Callable[[TextFrame], bool] | None = None
    # A protocol-1 client: a room's presence frame reaches it as one user_join or
    # user_leave per name (frames.legacy_presence_frames).
    legacy: bool = False

    async def ready(self) -> None:
        """The greeting is out: flush what waited and go live."""
        while self.pending:
            batch, self.pending = self.pending, []
            for text in batch:
                await self.send(text)
        self.pending = None


class Hub:
    def __init__(self, layer) -> None:
        self.layer = layer
        # shard -> this process's channel on it (one, under key 0, unless the core layer
        # is sharded and the batched receive is on).
        self.channels: dict[int, str] = {}
        self.groups: dict[str, set[Member]] = {}
        # group -> a number that changes whenever this process subscribes to the group or
        # receives an event that could change what a newcomer reads as its history
        # (services/shared_history.py shares a history read while it stays the same).
        self.versions: dict[str, int] = {}
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._tasks: dict[int, asyncio.Task] = {}
        self._refresher: asyncio.Task | None = None
        self._layer_slots = asyncio.Semaphore(LAYER_CALLS)
        # realtime.layers' core layer receives what waits in one call (a fast path).
        self._batched = hasattr(layer, "receive_batch") and fast_paths.on("receive_batch")
        self._sharded = getattr(layer, "shard_count", 1) > 1 and hasattr(layer, "group_shard")
        self._channel_per_shard = self._sharded and self._batched
        # With the core layer (realtime/layers.py), the group changes of a burst go together.
        self._changes: Coalescer[tuple[str, str, str]] | None = (
            Coalescer(self._send_changes, CHANGES_PER_BATCH)
            if hasattr(layer, "group_changes")
            else None
        )

    # --- membership ---------------------------------------------------------------

    async def _layer_call(self, op: str, group: str, channel: str) -> None:
        """A group_add or group_discard ("add", "discard") with the channel layer.

        Every socket has a group of its own (its user's inbox), so a join storm or a drain
        is thousands of these at once. Made one by one, the layer's redis-py pool opened a
        connection for each, one at a time under its lock, and the drain of a full
        replica ran out of time (docs/benchmarks.md). With the core layer
        (realtime/layers.py) those that arrive together go in one pipeline; otherwise at
        most LAYER_CALLS run at a time."""
        if self._changes is None:
            async with self._layer_slots:
                await getattr(self.layer, f"group_{op}")(group, channel)
            return
        await self._changes.call((op, group, channel))

    async def _send_changes(self, changes: list[tuple[str, str, str]]) -> list[None]:
        await self.layer.group_changes(changes)
        return [None] * len(changes)

    def _group_shard(self, group: str) -> int:
        """The layer server that holds `group` (0 with one)."""
        return self.layer.group_shard(group) if self._sharded else 0

    def _channel_key(self, group: str) -> int:
        return self._group_shard(group) if self._channel_per_shard else 0

    def channel_for(self, group: str) -> str | None:
        """This process's channel that `group` is (or would be) added with."""
        return self.channels.get(self._channel_key(group))

    def _lock(self, group: str) -> asyncio.Lock:
        lock = self._locks.get(group)
        if lock is None:
            lock = self._locks[group] = asyncio.Lock()
        return lock

    async def join(self, group: str, member: Member) -> None:
        """Add a local member; the first one subscribes this process to the group."""
        async with self._lock(group):
            members = self.groups.get(group)
            if members is None:
                channel = await self._start(self._channel_key(group))
                # Registered before the add completes: an event that beats the reply
                # must find the group known, not look stale.
                self.groups[group] = members = set()
                self.versions[group] = next(_versions)
                try:
                    await self._layer_call("add", group, channel)
                except BaseException:
                    del self.groups[group]
                    self.versions.pop(group, None)
                    raise
                metrics.FANOUT_GROUPS.set(len(self.groups))
            members.add(member)
            member.groups.add(group)

    async def leave(self, group: str, member: Member) -> None:
        """Remove a local member; the last one unsubscribes this process."""
        async with self._lock(group):
            members = self.groups.get(group)
            if members is None or member not in members:
                return
            members.discard(member)
            member.groups.discard(group)
            if not members:
                del self.groups[group]
                self.versions.pop(group, None)
                metrics.FANOUT_GROUPS.set(len(self.groups))
                channel = self.channel_for(group)
                if channel is not None:
                    await self._layer_call("discard", group, channel)

    def forget(self, member: Member) -> None:
        """Drop a member at once, without the layer (a consumer that crashed or was
        cancelled). A group left empty is unsubscribed when its next event arrives."""
        for group in member.groups:
            members = self.groups.get(group)
            if members is None:
                continue
            members.discard(member)
            lock = self._locks.get(group)
            if not members and not (lock is not None and lock.locked()):
                del self.groups[group]
                self.versions.pop(group, None)
        member.groups.clear()
        metrics.FANOUT_GROUPS.set(len(self.groups))

    def members(self, group: str) -> int:
        return len(self.groups.get(group, ()))

    # --- the receive loop ---------------------------------------------------------

    async def _start(self, key: int = 0) -> str:
        channel = self.channels.get(key)
        if channel is None:
            if self._batched:  # key is 0 unless each shard has its channel
                channel = await self.layer.new_batch_channel(key)
            else:
                channel = await self.layer.new_channel()
            self.channels[key] = channel
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.get_running_loop().create_task(self._run(key))
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        return channel

    async def _receive(self, channel: str) -> list[dict]:
        if self._batched:
            return await self.layer.receive_batch(channel)
        return [await self.layer.receive(channel)]

    async def _run(self, key: int) -> None:
        channel = self.channels[key]
        # The shard a failure of this channel stands for: its own, or every one.
        shard = key if self._channel_per_shard else None
        while True:
            try:
                events = await self._receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.LAYER_ERRORS.labels("receive", type(exc).__name__).inc()
                await self._failed(exc, shard)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            for event in events:
                if event.get("type") == LAYER_LOST:  # pub/sub: what was published meanwhile is gone
                    error = str(event.get("error", "subscription lost"))
                    metrics.LAYER_ERRORS.labels("subscription", error.split("(", 1)[0]).inc()
                    lost = event.get("shard") if self._sharded else None
                    await self._failed(ConnectionError(error), lost)
                    continue
                try:
                    await self.deliver(event)
                except Exception:
                    log.exception("fan-out of one event failed")

    async def deliver(self, event: dict) -> None:
        group = event.get("group")
        members = self.groups.get(group)
        if members is None:
            if group is not None:
                await self._drop_stale(group)
            return
        text, skip_channel, skip_user = (
            event["text"],
            event.get("skip_channel"),
            event.get("skip_user"),
        )
        if event.get("kind") not in QUIET_KINDS:
            self.versions[group] = next(_versions)
        legacy: list[tuple[str | None, str]] | None = None
        # Each text is framed once, for every member the server writes to directly.
        framed: dict[str, TextFrame] = {}
        sent = direct = 0
        # A copy: a member may leave (and the set shrink) while a send yields.
        for member in list(members):
            if member.conn_id == skip_channel:
                continue
            if skip_user is not None and member.username == skip_user:
                continue
            texts: tuple[str, ...] | list[str] = (text,)
            if member.legacy and event.get("kind") == "presence":
                if legacy is None:
                    legacy = _legacy_texts(text)
                # Protocol 1 never told a newcomer of its own arrival.
                texts = [t for joined, t in legacy if joined is None or joined != member.username]
                if not texts:
                    continue
            if member.pending is not None:
                member.pending.extend(texts)
                continue
            try:
                for each in texts:
                    if member.write is None:
                        await member.send(each)
                        continue
                    wire = framed.get(each)
                    if wire is None:
                        wire = framed[each] = text_frame(each)
                    if not member.write(wire):
                        break
                else:
                    sent += 1
                    direct += member.write is not None
            except Exception:
                log.debug("send to %s failed; its disconnect cleans up", member.conn_id)
                continue
        if sent:
            metrics.FRAMES_OUT.labels(metrics.frame_label(event.get("kind"))).inc(sent)
        if direct:
            metrics.FANOUT_WRITES.labels("direct").inc(direct)
        if sent > direct:
            metrics.FANOUT_WRITES.labels("send").inc(sent - direct)
        sent_at = event.get("sent_at")
        if sent_at is not None:
            metrics.FANOUT_SECONDS.observe(max(0.0, time.time() - sent_at))

    async def _drop_stale(self, group: str) -> None:
        """An event for a group nobody here is in (left, or kept from before an outage)."""
        async with self._lock(group):
            channel = self.channel_for(group)
            if group not in self.groups and channel is not None:
                with contextlib.suppress(Exception):
                    await self._layer_call("discard", group, channel)

    async def _failed(self, exc: Exception, shard: int | None = None) -> None:
        """The layer (or its server `shard`) is gone: members of the groups it held would
        hear nothing more, so tell them now.

        They are closed (1013) and reconnect, and resume, once the layer is back; their
        groups are joined again then. A member is in its room's group and its user's
        inbox: losing either closes it.
        """
        lost = [g for g in self.groups if shard is None or self._group_shard(g) == shard]
        if lost:
            log.warning(
                "channel layer receive failed%s: %r; closing its members",
                "" if shard is None else f" on shard {shard}",
                exc,
            )
        else:
            log.debug("channel layer receive failed: %r", exc)
        members = {m for group in lost for m in self.groups[group]}
        for group in lost:
            del self.groups[group]
            self.versions.pop(group, None)
        metrics.FANOUT_GROUPS.set(len(self.groups))
        for member in members:
            with contextlib.suppress(Exception):
                await member.fail(exc)

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            for group in list(self.groups):
                async with self._lock(group):
                    channel = self.channel_for(group)
                    if group in self.groups and channel is not None:
                        with contextlib.suppress(Exception):
                            await self._layer_call("add", group, channel)

    async def close(self) -> None:
        """Stop listening. Bounded: a Redis read can outlive its cancellation (seen with
        redis-py 5 under channels_redis), and shutdown must not hang on it."""
        running = [*self._tasks.values(), self._refresher]
        tasks = [t for t in running if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_SECONDS)
        self._tasks.clear()
        self._refresher = None
        self.groups.clear()
        self.versions.clear()


def _legacy_texts(text: str) -> list[tuple[str | None, str]]:
    """(who joined, or None for a leave; the frame's text) for protocol-1 members."""
    return [
        (f["user"] if f["type"] == "user_join" else None, delivery.encode(f))
        for f in frames.legacy_presence_frames(json.loads(text))
    ]


def hub() -> Hub:
    resources = runtime.current()
    found = resources.hub
    if found is None:
        found = resources.hub = Hub(get_channel_layer())
    return found


async def close_hub() -> None:
    """Stop this loop's hub (runtime.close_loop stops it with the rest)."""
    resources = runtime.current()
    found, resources.hub = resources.hub, None
    if found is not None:
        await found.close()
