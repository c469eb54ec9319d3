"""The history a newcomer gets, read once and shared by the joiners of a room.

In a join storm every newcomer of a room asks the database for the same last
CHAT_HISTORY_ON_JOIN messages. One read (and one serialization) per room per process
serves every joiner for up to CHAT_JOIN_HISTORY_SHARE seconds, as long as nothing has
changed the room since — which this process knows because it is subscribed to the room
(the joiner joined the group first) and the hub bumps the group's version on every event
that could change a history (fanout.Hub.versions).

Why it is exact: a read R started at version V. A joiner takes R only if the version is
still V after it joined the group. A message (or edit, delete, reaction) committed after
R's query has its event delivered after that check — then the joiner, a member by now,
gets it live — or before it, and then the version moved and the joiner reads anew.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from dataclasses import dataclass

from django.conf import settings

from .. import metrics, protocol
from ..names import room_group
from . import delivery, fanout, messages


@dataclass(slots=True)
class _Read:
    version: int
    started: float
    task: asyncio.Task[str]


_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Read]] = (
    weakref.WeakKeyDictionary()
)


async def _read(room) -> str:
    recent, has_more = await messages.history(room, limit=settings.CHAT_HISTORY_ON_JOIN)
    return delivery.encode(protocol.history_frame(recent, has_more, "join"))


async def greeting(room) -> str:
    """The join's `history` frame, serialized. Call after joining the room's group."""
    share = float(settings.CHAT_JOIN_HISTORY_SHARE)
    group = room_group(room.pk)
    version = fanout.hub().versions.get(group)
    if share <= 0 or version is None:
        return await _read(room)
    loop = asyncio.get_running_loop()
    reads = _reads.setdefault(loop, {})
    now = time.monotonic()
    found = reads.get(group)
    if found is not None and found.version == version and now - found.started < share:
        metrics.JOIN_HISTORY.labels("shared").inc()
    else:
        # Expired reads go as new ones start: at most one per group this process serves.
        for key in [k for k, r in reads.items() if now - r.started >= share]:
            del reads[key]
        metrics.JOIN_HISTORY.labels("read").inc()
        # A task of its own: a joiner that is cancelled does not cancel the others' read.
        found = reads[group] = _Read(version, now, loop.create_task(_read(room)))
        found.task.add_done_callback(lambda t, g=group, r=found: _failed(reads, g, r, t))
    return await asyncio.shield(found.task)


def _failed(reads: dict[str, _Read], group: str, read: _Read, task: asyncio.Task) -> None:
    """A read that failed is not shared: the next joiner tries the database itself."""
    if (task.cancelled() or task.exception() is not None) and reads.get(group) is read:
        del reads[group]
