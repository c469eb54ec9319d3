"""Reads of a room's history that many sockets need at once, read once and shared.

In a join storm every newcomer of a room asks the database for the same last
CHAT_HISTORY_ON_JOIN messages, and after a drain every moved client sends `resume` from
nearly the same last id. One read (and one serialization) per room, kind and cursor per
process serves every such socket for up to CHAT_HISTORY_SHARE seconds, as long as
nothing has changed the room since — which this process knows because it is subscribed
to the room (the socket joined the group first) and the hub bumps the group's version on
every event that could change a history (fanout.Hub.versions).

Why it is exact: a read R started at version V. A socket takes R only if the version is
still V after it joined the group. A message (or edit, delete, reaction) committed after
R's query has its event delivered after that check — then the socket, a member by now,
gets it live — or before it, and then the version moved and the socket reads anew.

At most MAX_READS reads are kept per process (the oldest go first), whatever cursors
clients send.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from django.conf import settings

from .. import metrics
from ..names import room_group
from ..protocol import frames
from . import delivery, fanout, messages

MAX_READS = 256

Key = tuple[str, str, int | None]  # (room group, "join" or "resume", cursor)


@dataclass(slots=True)
class _Read:
    version: int
    started: float
    task: asyncio.Task[str]


_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, OrderedDict[Key, _Read]] = (
    weakref.WeakKeyDictionary()
)


async def greeting(room) -> str:
    """The join's `history` frame, serialized. Call after joining the room's group."""

    async def read() -> str:
        recent, has_more = await messages.history(room, limit=settings.CHAT_HISTORY_ON_JOIN)
        return delivery.encode(frames.history_frame(recent, has_more, "join"))

    return await _shared((room_group(room.pk), "join", None), read)


async def resume(room, after: int) -> str:
    """The `history` frame (reason "resume") of what came after `after`, serialized."""

    async def read() -> str:
        page, more = await messages.missed(room, after)
        return delivery.encode(frames.history_frame(page, more, "resume"))

    return await _shared((room_group(room.pk), "resume", after), read)


async def _shared(key: Key, read: Callable[[], Awaitable[str]]) -> str:
    share = float(settings.CHAT_HISTORY_SHARE)
    version = fanout.hub().versions.get(key[0])
    kind = key[1]
    if share <= 0 or version is None:
        return await read()
    loop = asyncio.get_running_loop()
    reads = _reads.setdefault(loop, OrderedDict())
    now = time.monotonic()
    found = reads.get(key)
    if found is not None and found.version == version and now - found.started < share:
        metrics.SHARED_HISTORY.labels(kind, "shared").inc()
    else:
        for old in [k for k, r in reads.items() if now - r.started >= share]:
            del reads[old]
        metrics.SHARED_HISTORY.labels(kind, "read").inc()
        # A task of its own: a socket that is cancelled does not cancel the others' read.
        found = reads[key] = _Read(version, now, loop.create_task(read()))
        reads.move_to_end(key)
        while len(reads) > MAX_READS:
            reads.popitem(last=False)
        found.task.add_done_callback(lambda t, k=key, r=found: _failed(reads, k, r, t))
    return await asyncio.shield(found.task)


def _failed(reads: OrderedDict[Key, _Read], key: Key, read: _Read, task: asyncio.Task) -> None:
    """A read that failed is not shared: the next socket tries the database itself."""
    if (task.cancelled() or task.exception() is not None) and reads.get(key) is read:
        del reads[key]
