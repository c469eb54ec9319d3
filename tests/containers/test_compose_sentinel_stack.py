"""The whole compose stack with the `sentinel` profile, the app switched to the sentinels
by the env file (REDIS_URL empty, REDIS_SENTINELS, REDIS_SENTINEL_MASTER), brought up by
docker-compose 1.29.

Under traffic (clients on every ws replica, a sender posting through the API and
retrying a refused post, as an integration would), the master is stopped: posting works
again within down-after + 10 s, every process names the promoted replica in /metrics, no
app container restarts, and every client ends with every message (resume).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid

import pytest

from loadtests.chatclient.aio import close_all

from . import harness
from .test_compose_stack import (
    STACK_ENV,
    Stack,
    app_containers_state,
    connect_all,
    users,
    wait_healthy,
)

DOWN_AFTER_S = 5
SENTINEL_ENV = {
    **STACK_ENV,
    "REDIS_URL": "",
    "REDIS_SENTINELS": "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379",
    "REDIS_SENTINEL_MASTER": "chatstack",
    "REDIS_SENTINEL_DOWN_AFTER_MS": str(DOWN_AFTER_S * 1000),
}
PROFILE = ("redis-replica", "sentinel-1", "sentinel-2", "sentinel-3")


@pytest.fixture(scope="module")
def stack(built_images, tools, tmp_path_factory):
    compose = harness.Compose(
        tool=[tools["compose-v1"]],
        project=f"{harness.PROJECT_PREFIX}-sentinel-stack",
        workdir=tmp_path_factory.mktemp("compose-sentinel-stack"),
        extra_env=SENTINEL_ENV,
    )
    logs = harness.CACHE / "logs" / f"{compose.project}.log"
    try:
        compose.down()
        compose("--profile", "sentinel", "up", "-d", "--no-build", timeout=900)
        running = Stack(compose, "compose-v1")
        wait_healthy(running)
        harness.wait_for(
            lambda: all(harness.health(compose.container_ids(s)[0]) == "healthy" for s in PROFILE),
            timeout=120,
            what="replica and sentinels healthy",
        )
        tokens = harness.run(
            ["docker", "exec", running.one("web"), "sh", "-c",
             "/opt/venv/bin/python /srv/chatstack/app/entrypoint.py manage create_users "
             "--count 8 --prefix stuser --tokens-out /tmp/tokens.txt >/dev/null "
             "&& cat /tmp/tokens.txt && rm /tmp/tokens.txt"],
            timeout=120,
        ).stdout  # fmt: skip
        running.tokens = dict(line.split() for line in tokens.splitlines() if line.strip())
        yield running
    finally:
        logs.parent.mkdir(parents=True, exist_ok=True)
        out = compose("--profile", "sentinel", "logs", "--no-color", "--tail", "300", check=False)
        logs.write_text(out.stdout + out.stderr)
        compose.down()


def metrics_urls(stack: Stack) -> list[str]:
    ports = [harness.published_port(stack.one("web")), *stack.replica_ports().values()]
    return [f"http://127.0.0.1:{p}/metrics" for p in ports]


def master_in_metrics(stack: Stack, address: str) -> bool:
    """Every process (web, each ws) names `address` as the master in use."""
    pattern = re.compile(r'chat_redis_master\{[^}]*address="' + re.escape(address) + r'"[^}]*\} 1')
    for url in metrics_urls(stack):
        status, _, body = harness.http(url, timeout=8)
        if status != 200 or not pattern.search(body.decode()):
            return False
    return True


async def test_master_stopped_under_traffic(stack):
    compose = stack.compose
    network = compose.network("data")
    master, replica = stack.one("redis"), stack.one("redis-replica")
    first = f"{harness.address(master, network)}:6379"
    promoted = f"{harness.address(replica, network)}:6379"
    await asyncio.to_thread(
        harness.wait_for,
        lambda: master_in_metrics(stack, first),
        timeout=60,
        what="every process on the first master",
    )
    before = app_containers_state(stack)
    room = f"st-{uuid.uuid4().hex[:6]}"
    people = users(stack, 4)
    ports = list(stack.replica_ports().values())
    specs = [(stack.ws_url(room, p), people[i], stack.ws_url(room)) for i, p in enumerate(ports)]
    clients = await connect_all(specs)
    sender_token = people[-1][1]
    sent: list[int] = []
    stopped_at: float | None = None
    refused_after_stop: list[float] = []
    back_after: float | None = None
    try:
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline:
            n += 1
            try:
                status, body = await asyncio.to_thread(stack.post, room, sender_token, f"m{n}")
            except OSError as exc:  # a timeout: refused, as far as a sender can tell
                status, body = 0, {"error": repr(exc)}
            now = time.monotonic()
            if status == 201:
                sent.append(body["id"])
                if stopped_at is not None and back_after is None:
                    back_after = now - stopped_at
            elif stopped_at is not None:
                refused_after_stop.append(now - stopped_at)
            else:
                raise AssertionError(f"post refused before the failover: {status} {body}")
            if stopped_at is None and len(sent) >= 10:
                harness.run(["docker", "stop", "--time", "1", master])
                stopped_at = time.monotonic()
            if back_after is not None and len(sent) >= 10 + 10:
                break
            await asyncio.sleep(0.2)
        assert back_after is not None, "posting never worked again"
        harness.log(
            f"sentinel stack: posts refused for {len(refused_after_stop)} tries, "
            f"back after {back_after:.1f} s"
        )
        assert back_after <= DOWN_AFTER_S + 10
        await asyncio.to_thread(
            harness.wait_for,
            lambda: master_in_metrics(stack, promoted),
            timeout=30,
            what="every process on the promoted replica",
        )
        for url in metrics_urls(stack):
            body = harness.http(url, timeout=8)[2].decode()
            assert re.search(r"chat_redis_failovers_seen_total\{[^}]*\} [1-9]", body), url
        # Every client ends with every message the sender had accepted (live or resume).
        for c in clients:
            await c.until(
                lambda c=c: set(sent) <= set(c.messages), timeout=60, what="every message"
            )
        assert app_containers_state(stack) == before, "an app container restarted"
    finally:
        await close_all(clients)
        harness.run(["docker", "start", master], check=False)
