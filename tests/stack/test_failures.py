"""What happens when parts go away: a replica drained or killed, Redis or PostgreSQL
stopped. Every test leaves the stack to the `healthy` fixture to restore."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from loadtests.chatclient.aio import ChatClient
from localstack.stack import Stack, http_get

from .conftest import DRAIN_TIMEOUT, PRESENCE_TTL, log_lines
from .test_topology import login_session, post_message

pytestmark = pytest.mark.stack

# The sweep that announces an expired entry runs every TTL/3 on the surviving replicas.
PRESENCE_BOUND = PRESENCE_TTL + PRESENCE_TTL / 3
# The drain's own bound plus the hard-exit grace (realtime/daphne_server.py).
EXIT_BOUND = DRAIN_TIMEOUT + 10 + 2


def readyz(url: str) -> tuple[int, dict]:
    status, body = http_get(url + "/readyz")
    return status, json.loads(body)


def dependencies_ok(url: str) -> bool:
    """Ready, and this process reaches PostgreSQL and Redis again."""
    status, body = readyz(url)
    return status == 200 and set(body["dependencies"].values()) == {"ok"}


async def wait_exit(stack: Stack, index: int, timeout: float) -> int | None:
    return await asyncio.to_thread(stack.wait_replica, index, timeout)


async def test_sigterm_under_load_every_client_ends_with_every_message_once(
    stack, tokens, clients, room
):
    """Replica 2 drains while a sender keeps sending; its clients reconnect through nginx
    and resume. Afterwards every client holds every stored message, and no connection was
    sent the same live message twice."""
    via_nginx = stack.ws_url(room)
    placement = {"user2": 2, "user3": 2, "user4": 2, "user5": 3, "user6": 1}
    receivers = [
        await clients.open(
            stack.ws_url(room, replica=replica), tokens[name], name=name, reconnect_url=via_nginx
        )
        for name, replica in placement.items()
    ]
    for n in (7, 8, 9):
        receivers.append(
            await clients.open(
                via_nginx, tokens[f"user{n}"], name=f"user{n}", reconnect_url=via_nginx
            )
        )
    sender = await clients.open(stack.ws_url(room, replica=1), tokens["user1"], name="sender")
    everyone = {"user1", *(r.name for r in receivers)}

    sent: list[int] = []
    under_way = asyncio.Event()

    async def send_steadily(count: int) -> None:
        for i in range(count):
            sent.append((await sender.say(f"load {i}"))["id"])
            if i == 20:
                under_way.set()
            await asyncio.sleep(0.05)

    sending = asyncio.create_task(send_steadily(80))
    await under_way.wait()
    stack.signal_replica(2)
    code = await wait_exit(stack, 2, EXIT_BOUND)
    assert code == 0, "a drained replica exits cleanly"
    await sending

    drained = [r for r in receivers if 1012 in r.closes]
    assert {r.name for r in drained} >= {"user2", "user3", "user4"}
    for receiver in drained:
        assert receiver.connections == 2, receiver.name
    expected = set(sent)
    for receiver in receivers:
        await receiver.until(lambda r=receiver: expected <= set(r.messages), 15, "every message")
        assert set(receiver.messages) == expected, receiver.name
        for live in receiver.live:
            assert len(live) == len(set(live)), f"{receiver.name} got a live message twice"
    # And it matches what was stored.
    status, page = http_get(f"{stack.url}/api/rooms/{room}/messages?limit=100")
    assert status == 200
    assert {m["id"] for m in json.loads(page)["messages"]} == expected
    # Presence is right again everywhere, reconnected clients included.
    for receiver in [*receivers, sender]:
        await receiver.until(lambda r=receiver: r.users == everyone, 10, "everyone online")
    # The drained replica said what it did, as JSON.
    lines = [json.loads(line) for line in log_lines(stack.logs()["ws-2"])]
    said = [e["message"] for e in lines if e["logger"] == "chat.ws"]
    assert any(m.startswith("draining: stopped listening") for m in said), said
    # Either every consumer finished, or (channels_redis sometimes keeps a cancelled
    # receive waiting, see docs/operations.md) only finished sockets' consumers remained.
    finished = [m for m in said if m.startswith(("drained in", "drain timeout"))]
    assert len(finished) == 1, said
    if finished[0].startswith("drain timeout"):
        states = re.findall(r"state=(\d+), disconnected=(\w+)", finished[0])
        assert states and all(s == ("0", "True") for s in states), said


async def test_drain_is_bounded_even_with_a_consumer_stuck_in_the_database(
    stack, tokens, clients, room
):
    """PostgreSQL hangs (SIGSTOP): consumers block in database calls. SIGTERM still ends
    the replica, after CHAT_DRAIN_TIMEOUT; a second SIGTERM ends it at once."""
    open_ones = [
        await clients.open(stack.ws_url(room, replica=i), tokens[f"user{i}"]) for i in (1, 2)
    ]
    stack.pause_postgres()

    async def stuck_handshake(replica: int) -> None:
        client = ChatClient(stack.ws_url(room, replica=replica), tokens["user5"])
        await client.connect()

    stuck = [asyncio.create_task(stuck_handshake(i)) for i in (1, 2)]
    await asyncio.sleep(1)
    assert not any(task.done() for task in stuck), "the handshakes hang on the database"

    started = time.monotonic()
    stack.signal_replica(1)
    stack.signal_replica(2)
    for client in open_ones:
        await client.until(lambda c=client: 1012 in c.closes, 5, "closed with 1012")
    await asyncio.sleep(1)
    stack.signal_replica(2)  # the second signal
    assert await wait_exit(stack, 2, EXIT_BOUND) is not None
    assert time.monotonic() - started < DRAIN_TIMEOUT, "a second signal does not wait"
    assert await wait_exit(stack, 1, EXIT_BOUND) is not None
    assert time.monotonic() - started < EXIT_BOUND
    stack.resume_postgres()
    results = await asyncio.gather(*stuck, return_exceptions=True)
    assert all(isinstance(r, Exception) for r in results)
    ws1 = [json.loads(line)["message"] for line in log_lines(stack.logs()["ws-1"])]
    ws2 = [json.loads(line)["message"] for line in log_lines(stack.logs()["ws-2"])]
    assert any(m.startswith("drain timeout") for m in ws1)
    assert any(m.startswith("second signal") for m in ws2)


async def test_sigkill_leaves_no_ghost_beyond_the_ttl(stack, tokens, clients, room):
    victim = await clients.open(stack.ws_url(room, replica=3), tokens["user10"], name="victim")
    watchers = [
        await clients.open(stack.ws_url(room, replica=1), tokens["user11"], name="w1"),
        await clients.open(stack.ws_url(room, replica=2), tokens["user12"], name="w2"),
    ]
    for watcher in watchers:
        await watcher.until(lambda w=watcher: "user10" in w.users, what="victim listed")
    killed = time.monotonic()
    await asyncio.to_thread(stack.kill_replica, 3)
    for watcher in watchers:
        leave = await watcher.next(
            "presence", lambda f: "user10" in f["leaves"], timeout=3 * PRESENCE_TTL
        )
        assert leave["joins"] == [] and leave["total"] == 2
    elapsed = time.monotonic() - killed
    assert elapsed <= PRESENCE_BOUND + 2, f"user_leave after {elapsed:.1f} s"
    assert victim.closes  # its socket died with the process
    # A newcomer anywhere sees no ghost.
    newcomer = await clients.open(stack.ws_url(room), tokens["user13"])
    assert newcomer.users == {"user11", "user12", "user13"}


async def test_redis_outage_clear_errors_then_recovery_without_restarts(
    stack, tokens, clients, room
):
    pids = {name: proc.pid for name, proc in stack.processes().items() if name != "redis"}
    a = await clients.open(stack.ws_url(room, replica=1), tokens["user1"], name="a")
    b = await clients.open(stack.ws_url(room, replica=3), tokens["user2"], name="b")

    await asyncio.to_thread(stack.stop_redis)
    # Open sockets are told, then closed with 1013 (try again later).
    for client in (a, b):
        error = await client.next("error", timeout=10)
        assert error["code"] == "unavailable"
        await client.until(lambda c=client: 1013 in c.closes, 5, "closed with 1013")
    # Every process stays ready (in its Service): the outage is the app's to answer, and
    # /readyz says which dependency is out.
    for name, url in [*stack.process_urls().items(), ("nginx", stack.url)]:
        status, body = readyz(url)
        assert status == 200, name
        assert body["dependencies"] == {"database": "ok", "redis": "ConnectionError"}, name
    # A newcomer through nginx gets the same clear answer, not silence.
    refused = ChatClient(stack.ws_url(room), tokens["user3"])
    with pytest.raises(ConnectionRefusedError) as info:
        await refused.connect()
    assert info.value.args[0]["code"] == "unavailable"
    await refused.close()
    assert refused.closes in ([], [1013])
    status, body = post_message(stack, room, tokens["user3"], "while Redis is down")
    assert status == 503 and body["error"]["code"] == "unavailable"
    # Pages still work; only the online counts are unknown.
    status, page = http_get(stack.url + "/chat/")
    assert status == 200 and b'class="n">?<' in page

    await asyncio.to_thread(stack.start_redis)
    for name, url in [*stack.process_urls().items(), ("nginx", stack.url)]:
        await a.until(lambda u=url: dependencies_ok(u), 15, f"{name} reaches it again")
    # Same processes, delivering again across replicas.
    assert {n: p.pid for n, p in stack.processes().items() if n != "redis"} == pids
    a2 = await clients.open(stack.ws_url(room, replica=1), tokens["user1"])
    b2 = await clients.open(stack.ws_url(room, replica=3), tokens["user2"])
    sent = await a2.say("Redis is back")
    assert (await b2.next("chat_message"))["id"] == sent["id"]
    status, body = post_message(stack, room, tokens["user3"], "API too")
    assert status == 201
    assert (await a2.next("chat_message", lambda f: f["id"] == body["id"]))["user"] == "user3"
    # The consumers' warnings carried their connection ids.
    ws1 = [json.loads(line) for line in log_lines(stack.logs()["ws-1"])]
    assert any(e.get("connection_id") and "unavailable" in e["message"] for e in ws1)


async def test_postgres_outage_clear_errors_then_recovery_without_restarts(
    stack, tokens, clients, room
):
    pids = {name: proc.pid for name, proc in stack.processes().items() if name != "postgres"}
    session = await asyncio.to_thread(login_session, stack, "user4")
    a = await clients.open(stack.ws_url(room, replica=2), tokens["user1"], name="a")
    b = await clients.open(stack.ws_url(room, replica=3), tokens["user2"], name="b")

    await asyncio.to_thread(stack.stop_postgres)
    for name, url in stack.process_urls().items():
        status, body = readyz(url)
        assert status == 200, name
        assert body["dependencies"] == {"database": "OperationalError", "redis": "ok"}, name
    # The socket stays open; what needs the database says so.
    await a.send({"type": "chat_message", "message": "while the database is down"})
    error = await a.next("error")
    assert error["code"] == "unavailable" and error["for"] == "chat_message"
    assert not a.closes
    refused = ChatClient(stack.ws_url(room), tokens["user3"])
    with pytest.raises(ConnectionRefusedError) as info:
        await refused.connect()
    assert info.value.args[0]["code"] == "unavailable"
    await refused.close()
    status, body = post_message(stack, room, tokens["user3"], "while the database is down")
    assert status == 503 and body["error"]["code"] == "unavailable"
    # A browser session is told the same, and pages answer 503 rather than 500.
    browser = ChatClient(
        stack.ws_url(room), headers={"Origin": stack.url, "Cookie": f"sessionid={session}"}
    )
    with pytest.raises(ConnectionRefusedError) as info:
        await browser.connect()
    assert info.value.args[0]["code"] == "unavailable"
    await browser.close()
    for path in ("/chat/", f"/chat/{room}/"):
        status, page = http_get(stack.url + path)
        assert status == 503 and b"Back in a moment" in page, path

    await asyncio.to_thread(stack.start_postgres)
    for name, url in [*stack.process_urls().items(), ("nginx", stack.url)]:
        await a.until(lambda u=url: dependencies_ok(u), 15, f"{name} reaches it again")
    assert {n: p.pid for n, p in stack.processes().items() if n != "postgres"} == pids
    # The same sockets work again, no reconnect needed.
    sent = await a.say("the database is back")
    assert (await b.next("chat_message", lambda f: f["id"] == sent["id"]))["user"] == "user1"
    assert not a.closes and not b.closes
