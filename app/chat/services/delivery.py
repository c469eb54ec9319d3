"""The one seam to the real-time tier: every frame reaches clients through here.

A frame is serialized to JSON once, here, and carried through the channel layer as
text; each process's fan-out hub (fanout.py) writes the text unchanged to its sockets,
so a room of 1,000 costs one json.dumps, not 1,000. Callers deliver only after the
database has committed, so no client hears of a row that was rolled back.
"""

from __future__ import annotations

import json
import logging
import time

from channels.layers import get_channel_layer

from .. import metrics
from ..names import room_group, user_inbox

log = logging.getLogger(__name__)

# The channel-layer event type (services/fanout.py receives it, not consumers).
EVENT = "chat.frame"


def encode(frame: dict) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


async def _group_send(group: str, frame: dict, **extra: object) -> None:
    # `group` tells services/fanout.py whom to hand the text to; `sent_at` measures it.
    event = {
        "type": EVENT,
        "group": group,
        "kind": frame["type"],
        "text": encode(frame),
        "sent_at": time.time(),
        **extra,
    }
    started = time.perf_counter()
    try:
        await get_channel_layer().group_send(group, event)
    except Exception as exc:
        metrics.LAYER_ERRORS.labels("send", type(exc).__name__).inc()
        log.exception("channel layer send to %s failed", group)
        raise
    finally:
        metrics.LAYER_SEND_SECONDS.observe(time.perf_counter() - started)
    metrics.BROADCASTS.labels(frame["type"]).inc()


async def to_room(
    room_id: int,
    frame: dict,
    *,
    skip_channel: str | None = None,
    skip_user: str | None = None,
) -> None:
    """Every connection in the room, on every replica (less the skipped ones)."""
    await _group_send(room_group(room_id), frame, skip_channel=skip_channel, skip_user=skip_user)


async def to_user(user_id: int, frame: dict) -> None:
    """Every open connection of one user: any room, any replica."""
    await _group_send(user_inbox(user_id), frame)
