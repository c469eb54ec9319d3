"""CPU per step of posting a room message, each step timed alone on real servers.

Starts a throwaway Redis and PostgreSQL (tools/localstack), migrates, and times each step
of `chat.services.messages.post` with `time.process_time` (this process's CPU, the
database thread's included) over many calls: where a small room's per-message cost goes
(docs/benchmarks.md). Not a throughput figure: one caller, nothing else running.

    .venv/bin/python loadtests/bench/steps.py [--calls 1500] [--concurrency 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO / "app"), str(REPO / "tools")]


def setup() -> None:
    from localstack.servers import start_test_services

    os.environ.update(start_test_services())
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="steps-" + "x" * 50,
        ALLOWED_HOSTS="localhost",
        CHAT_RATE_LIMIT_PER_SECOND="1000000",
        CHAT_RATE_LIMIT_BURST="1000000",
    )
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


async def measure(name: str, step: Callable[[], Awaitable[object]], calls: int, conc: int) -> None:
    for _ in range(50):  # connections opened, scripts loaded, caches warm
        await step()

    async def worker() -> None:
        for _ in range(calls // conc):
            await step()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done = calls // conc * conc
    print(f"{name:44s} {1e6 * cpu / done:8.0f} µs CPU {1e6 * wall / done:8.0f} µs wall", flush=True)


async def main(calls: int, conc: int) -> None:
    from channels.db import database_sync_to_async
    from channels.layers import get_channel_layer
    from channels_redis.core import RedisChannelLayer
    from django.contrib.auth import get_user_model

    from chat import redis_client, runtime
    from chat.models import Room
    from chat.names import room_group
    from chat.services import messages, ratelimit
    from chat.services.delivery import EVENT

    user = await database_sync_to_async(get_user_model().objects.create_user)("steps", "x")
    room = await database_sync_to_async(Room.objects.create)(name="steps")
    layer = get_channel_layer()
    channel = await layer.new_batch_channel()
    group = room_group(room.pk)
    await layer.group_add(group, channel)
    event = {"type": EVENT, "group": group, "kind": "chat_message", "text": "x" * 200}
    redis = redis_client.get_redis()

    orm_store = database_sync_to_async(messages.store.store_message)
    steps: list[tuple[str, Callable[[], Awaitable[object]], bool]] = [
        ("Redis PING (the round trip alone)", redis.ping, False),
        ("rate limit (one EVALSHA)", lambda: ratelimit.consume(user.id), False),
        ("store on the ORM's thread", lambda: orm_store(room, user, "hello"), False),
        (
            "store on the loop's connection (pg_client)",
            lambda: messages.store.store_message_async(room, user, "hello"),
            False,
        ),
        ("group_send (one process in the group)", lambda: layer.group_send(group, event), True),
        (
            "group_send as channels_redis does it",
            lambda: RedisChannelLayer.group_send(layer, group, event),
            True,
        ),
        ("post: rate limit + store + group_send", lambda: messages.post(room, user, "hi"), True),
    ]
    for name, step, queues in steps:
        await measure(name, step, calls, conc)
        if queues:  # empty the process queue, which holds at most CHAT_LAYER_CAPACITY
            await layer.receive_batch(channel, limit=1_000_000)
    await runtime.close_loop()
    await layer.flush()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=1)
    opts = parser.parse_args()
    setup()
    asyncio.run(main(opts.calls, opts.concurrency))
