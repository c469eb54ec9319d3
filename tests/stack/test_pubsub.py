"""The pub/sub channel layer (`CHAT_CHANNEL_LAYER=pubsub`) on its own small stack.

That layer has no queue: what is published while a replica's subscription is down never
reaches it. So a lost subscription must close the replica's sockets (1013) like the core
layer's failed receive does, and clients resume from the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from localstack.servers import free_ports
from localstack.stack import Stack

from .conftest import STACK_ENV
from .test_failures import dependencies_ok

pytestmark = pytest.mark.stack

REPLICAS = 2


@pytest.fixture(scope="module")
def pubsub_stack() -> Iterator[Stack]:
    first = free_ports(REPLICAS + 2)
    env = {**STACK_ENV, "CHAT_CHANNEL_LAYER": "pubsub"}
    with Stack(replicas=REPLICAS, port=first, base_port=first + 1, env=env) as running:
        yield running


@pytest.fixture(scope="module")
def pubsub_tokens(pubsub_stack: Stack) -> dict[str, str]:
    out = pubsub_stack.root / "pubsub-tokens.txt"
    pubsub_stack.manage("create_users", "--count", "2", "--prefix", "ps", "--tokens-out", str(out))
    return dict(line.split() for line in out.read_text().splitlines())


async def test_a_lost_subscription_closes_sockets_then_delivery_resumes(
    pubsub_stack, pubsub_tokens, clients, room
):
    stack, tokens = pubsub_stack, pubsub_tokens
    a = await clients.open(stack.ws_url(room, replica=1), tokens["ps1"], name="a")
    b = await clients.open(stack.ws_url(room, replica=2), tokens["ps2"], name="b")
    sent = await a.say("across replicas over pub/sub")
    assert (await b.next("chat_message"))["id"] == sent["id"]

    await asyncio.to_thread(stack.stop_redis)
    try:
        for client in (a, b):
            error = await client.next("error", timeout=10)
            assert error["code"] == "unavailable"
            await client.until(lambda c=client: 1013 in c.closes, 5, "closed with 1013")
    finally:
        await asyncio.to_thread(stack.start_redis)
    for name, url in stack.process_urls().items():
        await a.until(lambda u=url: dependencies_ok(u), 15, f"{name} reaches Redis again")
    a2 = await clients.open(stack.ws_url(room, replica=1), tokens["ps1"])
    b2 = await clients.open(stack.ws_url(room, replica=2), tokens["ps2"])
    sent = await a2.say("pub/sub is back")
    assert (await b2.next("chat_message", lambda f: f["id"] == sent["id"]))["id"] == sent["id"]
