"""channels_redis's layers, made loud where they would fail silently.

The core layer's over-capacity drops are counted and logged; the pub/sub layer's lost
subscriptions reach the receivers (below).

channels_redis drops a group message for any process whose queue already holds
`capacity` messages and only says so at INFO. The drop count is the first argument of
that log record, so a filter on its logger can count it without re-implementing
group_send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels_redis.core import RedisChannelLayer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _close_redis

from . import metrics

log = logging.getLogger("chat.layers")


class _DropCounter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if "over capacity" in str(record.msg) and record.args:
            dropped, members, group = record.args
            metrics.LAYER_DROPS.inc(int(dropped))
            log.warning(
                "channel layer dropped a message for %s of %s processes in group %s "
                "(queues at capacity)",
                dropped,
                members,
                group,
            )
            return False
        return True


_filter = _DropCounter()


class CountingRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        core_log = logging.getLogger("channels_redis.core")
        if _filter not in core_log.filters:
            core_log.addFilter(_filter)
        # The filter only sees records the logger lets through.
        if not core_log.isEnabledFor(logging.INFO):
            core_log.setLevel(logging.INFO)


# --- pub/sub: a lost subscription must not be silent ------------------------------------

# The event a receiver gets when its process's subscription failed: whatever was published
# meanwhile is gone, so services/fanout.py closes its sockets (1013) and clients resume.
LAYER_LOST = "chat.layer_lost"


class _SignallingShard(RedisSingleShardConnection):
    async def _do_receiving(self) -> None:
        # channels_redis 4.3's receive loop, plus telling the receivers when it fails: the
        # library logs the error, reconnects and resubscribes, and what was published in
        # between is lost without any receiver knowing.
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (TimeoutError, asyncio.CancelledError, GeneratorExit):
                raise
            except Exception as exc:
                log.warning("channel layer subscription failed: %r", exc)
                layer = self.channel_layer
                lost = layer.channel_layer.serialize({"type": LAYER_LOST, "error": repr(exc)})
                for queue in layer.channels.values():
                    queue.put_nowait(lost)
                await self._start_over()
                await asyncio.sleep(1)

    async def _start_over(self) -> None:
        """Drop the connection and every subscription; the next subscribe opens a fresh one.

        Left to itself, redis-py reconnects the same PubSub and resubscribes, but seen here
        (redis-py 5.3, Redis restarted under it) that read never returned, and the process
        heard nothing again. The receivers were told, so they join their groups afresh.
        """
        async with self._lock:
            redis, self._redis, self._pubsub = self._redis, None, None
            self._subscribed_to = set()
        if redis is not None:
            with contextlib.suppress(Exception):
                await _close_redis(redis)


class SignallingPubSubChannelLayer(RedisPubSubChannelLayer):
    """channels_redis's pub/sub layer whose receivers hear of a lost subscription."""

    def _get_layer(self) -> RedisPubSubLoopLayer:
        fresh = asyncio.get_running_loop() not in self._layers
        layer = super()._get_layer()
        if fresh:
            layer._shards = [_SignallingShard(shard.host, layer) for shard in layer._shards]
        return layer
