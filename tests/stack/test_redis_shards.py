"""The channel layer over two Redis shards (REDIS_MODE=shards): one shard dies under
traffic and comes back empty.

What happens when a shard dies: every group hashes to one shard (channels_redis's
consistent hashing of the group name); a room's presence lives on its room group's shard
and a user's rate limit on their inbox group's. A socket belongs to two groups, its
room's and its user's inbox; if either is on the dead shard, the socket is closed with
1013 and a new one is refused with `unavailable`, as are API posts to a room on it, or
by a user on it (503), until the shard is back. Rooms and
users whose groups are all on the other shards do not notice: their messages are stored
and delivered live throughout. Shard 0 is also REDIS_URL (abuse limits, Django's cache,
/readyz), so losing it is losing Redis; this test kills shard 1. When the shard returns
(empty: nothing on it is persistent), clients reconnect, the hubs join their groups
again, presence is rebuilt by the next heartbeats, and `resume` brings every message the
API accepted meanwhile, from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from loadtests.chatclient.aio import ChatClient
from localstack.servers import free_ports
from localstack.stack import Stack

from .conftest import REPLICAS, STACK_ENV, keep_logs
from .traffic import ApiSender, stored_ids

pytestmark = pytest.mark.stack

USERS = 64  # group names of consecutive ids hash unevenly: enough on each shard
DEAD = 1  # the shard that dies; shard 0 is REDIS_URL too

# The app's own mapping of group names to shards, for rooms made here and every user.
LAYOUT = """
import json
from django.contrib.auth import get_user_model
from chat import names
from chat.redis_client import shard_for_group, shard_for_user
from chat.services import rooms
out = {"rooms": {}, "users": {}}
for name in NAMES:
    room, _ = rooms.create_room(name)
    out["rooms"][name] = [shard_for_group(names.room_group(room.pk))]
for user in get_user_model().objects.filter(username__startswith="user"):
    out["users"][user.username] = [shard_for_user(user.pk)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def shard_stack() -> Iterator[tuple[Stack, dict[str, str]]]:
    first = free_ports(REPLICAS + 2)
    with Stack(
        replicas=REPLICAS,
        port=first,
        base_port=first + 1,
        env=STACK_ENV,
        redis_mode="shards",
        redis_shards=2,
    ) as stack:
        out = stack.root / "tokens.txt"
        stack.manage(
            "create_users", "--count", str(USERS), "--prefix", "user", "--tokens-out", str(out)
        )
        try:
            yield stack, dict(line.split() for line in out.read_text().splitlines())
        finally:
            keep_logs(stack, "stack-logs-shards")


def layout(
    stack: Stack, room_names: list[str]
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Create the rooms; the shards each room (its group) and each user (inbox group,
    rate-limit bucket) has keys on."""
    code = f"NAMES = {room_names!r}\n{LAYOUT}"
    done = stack.manage("shell", "-c", code)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return found["rooms"], found["users"]


async def test_a_dead_shard_stalls_only_its_rooms_and_they_recover(shard_stack, clients):
    stack, tokens = shard_stack
    rooms, users = layout(stack, [f"sh-{uuid.uuid4().hex[:8]}-{i}" for i in range(12)])
    live_room = next(name for name, shards in sorted(rooms.items()) if DEAD not in shards)
    dead_room = next(name for name, shards in sorted(rooms.items()) if DEAD in shards)
    safe = sorted((u for u, on in users.items() if DEAD not in on), key=lambda u: int(u[4:]))
    exposed = sorted(u for u, on in users.items() if on[0] == DEAD)  # by inbox
    assert len(safe) >= 8 and exposed, users

    def url(room: str, replica: int) -> str:
        return stack.ws_url(room, replica=replica)

    async def member(room: str, user: str, replica: int) -> ChatClient:
        return await clients.open(
            url(room, replica),
            tokens[user],
            name=f"{user}@ws-{replica}",
            reconnect_url=url(room, replica),
        )

    # Everyone in the live room has an inbox off the dead shard, but one user who has not.
    unaffected = [await member(live_room, safe[i], i) for i in (1, 2, 3)]
    inbox_on_dead = await member(live_room, exposed[0], 1)
    stalled = [await member(dead_room, safe[3 + i], i) for i in (1, 2, 3)]
    live_sender = ApiSender(stack, live_room, tokens[safe[0]]).start()
    dead_sender = ApiSender(stack, dead_room, tokens[safe[7]]).start()
    await live_sender.until_accepted(5)
    await dead_sender.until_accepted(5)

    await asyncio.to_thread(stack.stop_shard, DEAD, signal.SIGKILL)
    killed = time.monotonic()
    for client in [*stalled, inbox_on_dead]:
        await client.until(lambda c=client: 1013 in c.closes, 10, "closed with 1013")
    newcomer = ChatClient(url(dead_room, 2), tokens[safe[1]], name="newcomer")
    with pytest.raises(ConnectionRefusedError) as refused:
        await newcomer.connect()
    assert refused.value.args[0]["code"] == "unavailable"
    await newcomer.close()
    # Between users on the live shard, private messages go on, across replicas.
    pm = {"type": "private_message", "to": unaffected[1].name.split("@")[0], "message": "psst"}
    await unaffected[0].send(pm)
    receipt = await unaffected[0].next("private_message_delivered")
    incoming = await unaffected[1].next("private_message")
    assert incoming["id"] == receipt["id"] and incoming["message"] == "psst"
    # The live room goes on: three seconds of posts, all accepted, all delivered live.
    await live_sender.until_accepted(15, after=killed)
    assert dead_sender.refused, "posts to a room on the dead shard are refused"
    outage = {m for when, m in live_sender.accepted if when > killed}

    await asyncio.to_thread(stack.start_shard, DEAD)
    restarted = time.monotonic()
    await dead_sender.until_accepted(5, after=restarted)
    await live_sender.stop()
    await dead_sender.stop()

    assert not live_sender.refused
    live_ids, dead_ids = stored_ids(stack, live_room), stored_ids(stack, dead_room)
    assert live_sender.ids <= live_ids and dead_sender.ids <= dead_ids
    for client in unaffected:
        await client.until(lambda c=client: live_ids <= set(c.messages), 15, "every message")
        assert client.closes == [] and client.connections == 1, client.name
        assert outage <= set(client.live[0]), f"{client.name} missed live messages"
        assert len(client.live[0]) == len(set(client.live[0])), client.name
    for client, expected in [*((c, dead_ids) for c in stalled), (inbox_on_dead, live_ids)]:
        await client.until(lambda c=client, e=expected: e <= set(c.messages), 30, "resumed")
        assert set(client.messages) == expected, client.name
        assert set(client.closes) == {1013}, (client.name, client.closes)
        for live in client.live:
            assert len(live) == len(set(live)), f"{client.name} got a live message twice"
