"""A drain without a herd: the draining replica closes its sockets over CHAT_DRAIN_SPREAD
seconds, each 1012 carrying a reconnect delay hint, nothing is lost, and the room hears
nothing of the clients that moved (they were back within the presence grace)."""

from __future__ import annotations

import asyncio
import json

import pytest

from loadtests.chatclient.protocol import drain_hint
from localstack.stack import http_get

from .conftest import DRAIN_SPREAD
from .test_failures import EXIT_BOUND, wait_exit

pytestmark = pytest.mark.stack

SOCKETS_PER_USER = 2
USERS_ON_REPLICA = [f"user{n}" for n in range(2, 14)]  # 12 users: 24 sockets


async def test_a_drain_spreads_its_closes_and_hints_each_reconnect(stack, tokens, clients, room):
    via_nginx = stack.ws_url(room)
    drained = [
        await clients.open(
            stack.ws_url(room, replica=3), tokens[name], name=name, reconnect_url=via_nginx
        )
        for name in USERS_ON_REPLICA
        for _ in range(SOCKETS_PER_USER)
    ]
    sender = await clients.open(stack.ws_url(room, replica=1), tokens["user1"], name="sender")

    sent: list[int] = []
    under_way = asyncio.Event()

    async def send_steadily(count: int) -> None:
        for i in range(count):
            sent.append((await sender.say(f"spread {i}"))["id"])
            if i == 10:
                under_way.set()
            await asyncio.sleep(0.05)

    sending = asyncio.create_task(send_steadily(100))  # outlasts the spread
    await under_way.wait()
    await sender.until(lambda: set(USERS_ON_REPLICA) <= sender.users, what="all listed")
    seen_before = len(sender.frames)
    stack.signal_replica(3)
    assert await wait_exit(stack, 3, EXIT_BOUND) == 0, "a drained replica exits cleanly"
    await sending

    closes = []
    for client in drained:
        restarts = [event for event in client.close_events if event[1] == 1012]
        assert len(restarts) == 1, (client.name, client.close_events)
        at, _, reason = restarts[0]
        hint = drain_hint(reason)
        assert hint is not None, f"{client.name}: no delay hint in {reason!r}"
        assert 0 <= hint <= DRAIN_SPREAD
        closes.append(at)
        assert client.connections == 2, client.name
    span = max(closes) - min(closes)
    assert DRAIN_SPREAD / 2 <= span <= DRAIN_SPREAD + 1, f"closes spread over {span:.2f} s"

    expected = set(sent)
    for client in drained:
        await client.until(lambda c=client: expected <= set(c.messages), 15, "every message")
        assert set(client.messages) == expected, client.name
        for live in client.live:
            assert len(live) == len(set(live)), f"{client.name} got a live message twice"
    # Moved within CHAT_PRESENCE_GRACE: the room heard no leave, and no join, of them.
    await asyncio.sleep(2)  # a presence frame still due would have come by now
    news = [f for f in sender.frames[seen_before:] if f["type"] == "presence"]
    mentioned = {name for f in news for name in f["joins"] + f["leaves"]}
    assert not mentioned & set(USERS_ON_REPLICA), news
    assert set(USERS_ON_REPLICA) <= sender.users
    status, page = http_get(f"{stack.url}/api/rooms/{room}/messages?limit=100")
    assert status == 200
    assert {m["id"] for m in json.loads(page)["messages"]} == expected
