"""`make stack REDIS_MODE=…` as the README gives it, and the Sentinel topology under it.

Each mode starts from `make`, serves one chat message from a socket on one replica to a
socket on the other (so through the channel layer) and writes its Redis variables to
the env file; Ctrl-C leaves nothing. The topology test needs no app: two failovers in a
row and a killed master taken back as a replica.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from loadtests.chatclient.aio import ChatClient, close_all
from localstack.servers import SentinelRedis

from .make_stack import make_stack, tokens_from

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.stack


async def one_message_across_replicas(port: int, tokens: dict[str, str]) -> None:
    room = f"modes-{port}"
    url = "ws://127.0.0.1:{}/ws/chat/" + room + "/"
    a = ChatClient(url.format(port + 2), tokens["m1"], name="on ws-1")
    b = ChatClient(url.format(port + 3), tokens["m2"], name="on ws-2")
    try:
        await a.connect()
        await b.connect()
        sent = await a.say("across the layer")
        got = await b.next("chat_message", lambda f: f["id"] == sent["id"])
        assert got["message"] == "across the layer"
    finally:
        await close_all([a, b])


async def test_make_stack_redis_mode_sentinel(tmp_path):
    with make_stack(tmp_path, "REDIS_MODE=sentinel") as stack:
        env = stack["env"]
        assert "REDIS_URL" not in env and "REDIS_LAYER_URLS" not in env
        assert env["REDIS_SENTINEL_MASTER"] == "chat"
        sentinels = env["REDIS_SENTINELS"].split(",")
        assert len(sentinels) == 3
        assert all(re.fullmatch(r"127\.0\.0\.1:\d+", s) for s in sentinels), sentinels
        assert "sentinel mode" in stack["printed"] and env["REDIS_SENTINELS"] in stack["printed"]
        await one_message_across_replicas(stack["port"], tokens_from(stack["env_file"], tmp_path))


async def test_make_stack_redis_mode_shards(tmp_path):
    with make_stack(tmp_path, "REDIS_MODE=shards", "REDIS_SHARDS=2") as stack:
        env = stack["env"]
        shards = env["REDIS_LAYER_URLS"].split(",")
        assert len(shards) == 2 and len(set(shards)) == 2
        assert env["REDIS_URL"] == shards[0]
        assert "REDIS_SENTINELS" not in env
        assert "shards mode: 2 servers" in stack["printed"]
        assert all(url in stack["printed"] for url in shards)
        await one_message_across_replicas(stack["port"], tokens_from(stack["env_file"], tmp_path))


def test_sentinel_topology_fails_over_twice_and_takes_a_killed_master_back(tmp_path):
    topology = SentinelRedis(tmp_path).start()
    try:
        first = topology.master()
        assert first is topology.nodes[0]
        old = topology.kill_master()
        killed = time.monotonic()
        new = topology.wait_failover(old, timeout=30)
        took = time.monotonic() - killed
        assert new is not old and took < topology.down_after_ms / 1000 + 10, took
        # The killed master comes back with its old config: Sentinel makes it a replica.
        topology.restart(old)
        assert old.replication()["master_port"] == str(new.port)
        assert f"replicaof 127.0.0.1 {new.port}" in old.conf.read_text()
        # And a second failover, at once: the failover timeout does not stand in the way.
        assert topology.kill_master() is new
        assert topology.wait_failover(new, timeout=30) is old
    finally:
        topology.stop()
