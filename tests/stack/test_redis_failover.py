"""The Redis master SIGKILLed under traffic, on a Sentinel topology (REDIS_MODE=sentinel):
a master, a replica, three Sentinels (quorum 2, down-after 5 s).

Until the Sentinels promote the replica, what needs Redis is refused (503 `unavailable`,
sockets closed with 1013); then every process follows the new master by itself, with
no restart, and the clients' resume fills what they missed. Run for both channel layers:
the core layer's queues and the pub/sub layer's subscriptions each live on the master.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from localstack.servers import free_ports
from localstack.stack import Stack

from .conftest import REPLICAS, STACK_ENV, keep_logs, metric
from .test_failures import dependencies_ok
from .traffic import ApiSender, stored_ids

pytestmark = pytest.mark.stack

DOWN_AFTER = 5.0  # SentinelRedis's down-after-milliseconds, in seconds
MEMBERS_PER_REPLICA = 2


@pytest.fixture(scope="module", params=["redis", "pubsub"])
def sentinel_stack(request) -> Iterator[tuple[Stack, dict[str, str]]]:
    """A stack of its own on the Sentinel topology, with CHAT_CHANNEL_LAYER as given."""
    layer = request.param
    first = free_ports(REPLICAS + 2)
    env = {**STACK_ENV, "CHAT_CHANNEL_LAYER": layer}
    with Stack(
        replicas=REPLICAS, port=first, base_port=first + 1, env=env, redis_mode="sentinel"
    ) as stack:
        assert stack.sentinel and stack.sentinel.down_after_ms == DOWN_AFTER * 1000
        out = stack.root / "tokens.txt"
        stack.manage("create_users", "--count", "8", "--prefix", "user", "--tokens-out", str(out))
        try:
            yield stack, dict(line.split() for line in out.read_text().splitlines())
        finally:
            keep_logs(stack, f"stack-logs-failover-{layer}")


async def test_master_killed_under_traffic_nothing_lost_no_restart(sentinel_stack, clients, room):
    stack, tokens = sentinel_stack
    assert stack.sentinel
    app = ["web", "nginx", *(r.name for r in stack.serving())]
    pids = {name: stack.processes()[name].pid for name in app}
    members = []
    for replica in stack.serving():
        for k in range(MEMBERS_PER_REPLICA):
            n = 2 + (replica.index - 1) * MEMBERS_PER_REPLICA + k
            url = stack.ws_url(room, replica=replica.index)
            # Back to the same replica: each replica's own recovery is what is tested.
            members.append(
                await clients.open(url, tokens[f"user{n}"], name=f"user{n}", reconnect_url=url)
            )
    sender = ApiSender(stack, room, tokens["user1"]).start()
    await sender.until_accepted(10)

    old = await asyncio.to_thread(stack.sentinel.kill_master)
    killed = time.monotonic()
    new = await asyncio.to_thread(stack.sentinel.wait_failover, old, DOWN_AFTER + 20)
    # Posting works again within down-after + 10 s, then a while more under traffic.
    await sender.until_accepted(10, after=max([killed, *sender.refused]), timeout=40)
    await sender.stop()
    assert sender.back_after(killed) <= DOWN_AFTER + 10, (
        f"posting refused until {sender.back_after(killed):.1f} s after the kill"
    )

    # No app process restarted.
    running = stack.processes()
    assert {name: running[name].pid for name in app if name in running} == pids

    # Every client ends with every stored message, none of them twice on one connection.
    expected = stored_ids(stack, room)
    assert sender.ids <= expected
    for member in members:
        await member.until(lambda m=member: expected <= set(m.messages), 30, "every message")
        assert set(member.messages) == expected, member.name
        for live in member.live:
            assert len(live) == len(set(live)), f"{member.name} got a live message twice"
        assert set(member.closes) <= {1013}, (member.name, member.closes)

    # Ready again everywhere, each process saw the failover and names the new master.
    for name, url in stack.process_urls().items():
        await members[0].until(lambda u=url: dependencies_ok(u), 20, f"{name} ready again")
    for replica in stack.serving():
        assert metric(replica.url, "chat_redis_failovers_seen_total") >= 1, replica.name
        assert metric(replica.url, "chat_redis_master", address=new.address) == 1, replica.name
        assert metric(replica.url, "chat_redis_master", address=old.address) == 0, replica.name
