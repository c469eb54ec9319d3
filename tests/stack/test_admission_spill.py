"""Admission control across replicas: a replica at its limit refuses a handshake with 503
before the upgrade (chat/admission_gate.py), and nginx passes it on to another replica
(`proxy_next_upstream … http_503`), so the client never hears of it; only when every
replica is at its limit does the client get the 503, with a Retry-After it honours.

Each test puts the real nginx (nginx/render.sh) in front of two ws processes of its own,
on the suite's PostgreSQL and Redis, with the limits it needs; the stack's own replicas
are not involved.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from loadtests.chatclient.aio import ChatClient
from localstack.servers import Nginx, Proc, free_port, wait_until
from localstack.stack import Stack, http_get

from .conftest import metric

pytestmark = pytest.mark.stack

REFUSALS = "chat_ws_admission_refusals_total"


class Pool:
    """Two ws processes with their own settings behind an nginx of their own."""

    def __init__(self, stack: Stack, *settings: dict[str, str]) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ports = [free_port() for _ in settings]
        self.procs: list[Proc] = [
            stack.spawn_ws(f"spill-{tag}-{i}", port, **env)
            for i, (port, env) in enumerate(zip(self.ports, settings, strict=True), 1)
        ]
        self.nginx = Nginx(
            stack.root / f"spill-{tag}",
            free_port(),
            web=[f"127.0.0.1:{stack.web_port}"],
            ws=[f"127.0.0.1:{port}" for port in self.ports],
            static_root=Path(stack.env["STATIC_ROOT"]),
        )
        for proc, url in zip(self.procs, self.urls, strict=True):
            wait_until(lambda u=url: http_get(u + "/readyz")[0] == 200, 120, proc.name, proc)
        self.nginx.start()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def room_url(self, room: str, replica: int | None = None) -> str:
        port = self.nginx.port if replica is None else self.ports[replica - 1]
        return f"ws://127.0.0.1:{port}/ws/chat/{room}/?v=2"

    def refusals(self, replica: int, reason: str) -> float:
        return metric(self.urls[replica - 1], REFUSALS, reason=reason)

    def handshakes(self, count: int) -> list[dict]:
        """nginx's access-log lines of the last `count` WebSocket handshakes, once all are
        written (a proxied WebSocket's line is written when it closes)."""
        lines: list[dict] = []

        def written() -> bool:
            nonlocal lines
            text = self.nginx.access_log.read_text() if self.nginx.access_log.exists() else ""
            lines = [json.loads(x) for x in text.splitlines() if '"uri":"/ws/' in x]
            return len(lines) >= count

        wait_until(written, 15, "nginx's access-log lines")
        return lines[-count:]

    def stop(self) -> None:
        self.nginx.stop()
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def pool(stack: Stack) -> Iterator:
    started: list[Pool] = []

    def start(*settings: dict[str, str]) -> Pool:
        started.append(Pool(stack, *settings))
        return started[-1]

    yield start
    for one in started:
        one.stop()


async def join(url: str, token: str) -> websockets.ClientConnection:
    """A socket that has joined (its greeting read); InvalidStatus if refused."""
    conn = await websockets.connect(
        url, additional_headers={"Authorization": f"Bearer {token}"}, open_timeout=20
    )
    for kind in ("history", "user_list"):
        assert json.loads(await asyncio.wait_for(conn.recv(), 20))["type"] == kind
    return conn


def spilled(lines: list[dict]) -> int:
    """Handshakes nginx passed on after a 503, and the next replica took."""
    return sum(1 for line in lines if line["upstream_status"] == "503, 101")


async def test_a_full_replica_spills_its_joins_to_the_other(pool, tokens, room):
    # Replica 1 takes two sockets; the test holds both, straight to it, where nginx
    # cannot count them: least_conn then keeps choosing replica 1 first.
    spill = pool({"CHAT_WS_MAX_CONNECTIONS": "2"}, {})
    users = list(tokens.values())
    held = [await join(spill.room_url(room, replica=1), users[i]) for i in range(2)]
    refused_before = spill.refusals(1, "connections")

    joined = [await join(spill.room_url(room), users[i % len(users)]) for i in range(10)]

    assert metric(spill.urls[1], "chat_ws_connections") == 10, "every join is on replica 2"
    refused = spill.refusals(1, "connections") - refused_before
    assert refused >= 1, "nginx tried the full replica first"

    # Its 503s did not mark replica 1 down (max_fails=0): once it has room, the next join
    # goes to it, the replica with the fewest of nginx's connections.
    await held.pop().close()
    wait_until(lambda: metric(spill.urls[0], "chat_ws_connections") == 1, 10, "a free slot")
    await asyncio.sleep(0.3)  # the slot is given back as the closed socket's consumer ends
    joined.append(await join(spill.room_url(room), users[0]))
    assert metric(spill.urls[0], "chat_ws_connections") == 2, "replica 1 takes joins again"

    await asyncio.gather(*(conn.close() for conn in joined + held))
    lines = spill.handshakes(11)  # the held sockets went straight to replica 1
    assert all(line["status"] == 101 for line in lines), lines  # no client saw a refusal
    assert spilled(lines) == refused, lines


async def test_a_join_burst_past_a_replicas_handshake_limit_spills_without_a_refusal(
    pool, tokens, room
):
    spill = pool({"CHAT_WS_MAX_HANDSHAKES": "1"}, {})
    users = list(tokens.values())
    burst = 24

    joined = await asyncio.gather(
        *(join(spill.room_url(room), users[i % len(users)]) for i in range(burst))
    )

    refused = spill.refusals(1, "handshakes")
    assert refused >= 1, "24 joins at once never found replica 1 busy"
    await asyncio.gather(*(conn.close() for conn in joined))
    lines = spill.handshakes(burst)
    assert all(line["status"] == 101 for line in lines), lines  # every join succeeded
    assert spilled(lines) == refused, lines


async def test_when_every_replica_is_full_the_client_waits_as_told_and_gets_in(
    pool, tokens, room, clients
):
    spill = pool({"CHAT_WS_MAX_CONNECTIONS": "1"}, {"CHAT_WS_MAX_CONNECTIONS": "1"})
    users = list(tokens.values())
    held = [await join(spill.room_url(room, replica=r), users[r]) for r in (1, 2)]

    with pytest.raises(InvalidStatus) as caught:
        await join(spill.room_url(room), users[3])
    response = caught.value.response
    assert response.status_code == 503
    retry_after = int(response.headers["Retry-After"])
    assert 5 <= retry_after <= 15  # services/admission.py's range for sockets
    assert json.loads(response.body)["error"]["code"] == "overloaded"
    (line,) = spill.handshakes(1)
    assert (line["status"], line["upstream_status"]) == (503, "503, 503"), line

    # A client that honours the Retry-After gets in once a socket is free: it is refused
    # now, and a socket is freed a second later, well within the wait it is told.
    chat = ChatClient(spill.room_url(room), users[4], version=None)
    clients.append(chat)
    waiting = asyncio.create_task(chat.join())
    await asyncio.sleep(1)
    await held.pop().close()
    await asyncio.wait_for(waiting, 40)
    joined_at = time.monotonic()
    assert chat.joined and chat.refusals, "refused, then admitted"
    refused_at, status, asked = chat.refusals[0]
    assert status == 503 and 5 <= asked <= 15
    assert joined_at - refused_at >= asked, "it waited as told"
    await asyncio.gather(*(conn.close() for conn in held))
