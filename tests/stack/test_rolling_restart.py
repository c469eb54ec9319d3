"""A rolling restart, one replica at a time as Kubernetes does, under traffic: nothing is
lost, each client reconnects about once, and the room hears nothing of the moves."""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator

import pytest

from localstack.servers import free_ports
from localstack.stack import Stack

from .conftest import REPLICAS, STACK_ENV
from .test_failures import EXIT_BOUND
from .test_topology import post_message

pytestmark = pytest.mark.stack

MEMBERS = [f"user{n}" for n in range(2, 14)]  # 12 clients, through nginx


@pytest.fixture(scope="module")
def rolling() -> Iterator[tuple[Stack, dict[str, str]]]:
    """A stack of its own: three replicas and a standby slot for the surge."""
    first = free_ports(REPLICAS + 3)
    with Stack(
        replicas=REPLICAS, spares=1, port=first, base_port=first + 1, env=STACK_ENV
    ) as stack:
        out = stack.root / "tokens.txt"
        stack.manage("create_users", "--count", "14", "--prefix", "user", "--tokens-out", str(out))
        yield stack, dict(line.split() for line in out.read_text().splitlines())


async def test_a_rolling_restart_moves_each_client_about_once_and_loses_nothing(
    rolling, clients, room
):
    stack, tokens = rolling
    via_nginx = stack.ws_url(room)
    members = [
        await clients.open(via_nginx, tokens[name], name=name, reconnect_url=via_nginx)
        for name in MEMBERS
    ]
    for member in members:
        await member.until(lambda m=member: set(MEMBERS) <= m.users, what="everyone listed")
    seen_before = {m.name: len(m.frames) for m in members}

    sent: list[int] = []
    done = asyncio.Event()

    async def post_steadily() -> None:  # an integration posting through the HTTP API
        i = 0
        while not done.is_set():
            status, body = await asyncio.to_thread(
                post_message, stack, room, tokens["user1"], f"rolling {i}"
            )
            assert status == 201, body
            sent.append(body["id"])
            i += 1
            await asyncio.sleep(0.2)

    posting = asyncio.create_task(post_steadily())
    # As a Deployment with maxSurge 1, maxUnavailable 0: each replacement is ready before
    # the replica it replaces drains (ws-4 for ws-1, then ws-1's slot for ws-2, …).
    for old, new in ((1, 4), (2, 1), (3, 2)):
        code = await asyncio.to_thread(stack.roll, old, new, EXIT_BOUND)
        assert code == 0, f"ws-{old} drained cleanly"
    await asyncio.sleep(1)
    done.set()
    await posting

    expected = set(sent)
    assert len(expected) > 20
    for member in members:
        await member.until(lambda m=member: expected <= set(m.messages), 20, "every message")
        for live in member.live:
            assert len(live) == len(set(live)), f"{member.name} got a live message twice"
    moves = [member.connections - 1 for member in members]

    # nginx's least_conn sends a drained replica's clients to the replacement (it has no
    # sockets yet), which is not restarted again: once each, now and then twice.
    assert max(moves) <= 2 and statistics.mean(moves) <= 1.25, moves
    assert min(moves) >= 1, "every replica was replaced: every client moved"
    # Everyone came back within CHAT_PRESENCE_GRACE: no leave, no join was announced.
    for member in members:
        news = [f for f in member.frames[seen_before[member.name] :] if f["type"] == "presence"]
        assert not news, (member.name, news)
