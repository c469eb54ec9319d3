"""channels_redis's core layer, with its over-capacity drops made loud and counted.

channels_redis drops a group message for any process whose queue already holds
`capacity` messages and only says so at INFO. The drop count is the first argument of
that log record, so a filter on its logger can count it without re-implementing
group_send.
"""

from __future__ import annotations

import logging

from channels_redis.core import RedisChannelLayer

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
