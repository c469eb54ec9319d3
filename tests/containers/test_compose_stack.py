"""The compose stack, up for real: postgres, redis, migrate, web, 3 ws replicas and nginx,
from compose/compose.yaml plus the test-only override (images made with no registry),
brought up once by docker-compose 1.29 and once by Docker Compose v2+ (v5).

Through nginx and straight to each replica (each publishes its port on 127.0.0.1 in the
test override): messages cross replicas; a ws container stopped under traffic drains
(1012) and its clients resume elsewhere without losing a message; Redis cut off the
network and put back recovers with no restart; every container is non-root and the app
and nginx run on read-only roots.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import uuid

import pytest

from tests.stack.client import ChatClient, close_all

from . import harness
from .conftest import TIMINGS

STACK_ENV = {
    # Short TTL and drain so failures show within the test's patience; senders go faster
    # than a person (rate limits have their own tests in tests/core).
    "CHAT_PRESENCE_TTL": "5",
    "CHAT_DRAIN_TIMEOUT": "8",
    "CHAT_RATE_LIMIT_PER_SECOND": "200",
    "CHAT_RATE_LIMIT_BURST": "400",
    "LOG_LEVEL": "INFO",
}
APP_SERVICES = ("web", "ws")
USERS = 16


class Stack:
    def __init__(self, compose: harness.Compose):
        self.compose = compose
        self.url = f"http://127.0.0.1:{compose.http_port}"
        self.tokens: dict[str, str] = {}

    def ids(self, service: str) -> list[str]:
        return self.compose.container_ids(service)

    def one(self, service: str) -> str:
        (cid,) = self.ids(service)
        return cid

    def replica_ports(self) -> dict[str, int]:
        return {cid: harness.published_port(cid) for cid in self.ids("ws")}

    def ws_url(self, room: str, port: int | None = None) -> str:
        return f"ws://127.0.0.1:{port or self.compose.http_port}/ws/chat/{room}/"

    def manage(self, *args: str) -> str:
        proc = harness.run(
            [
                "docker",
                "exec",
                self.one("web"),
                "/opt/venv/bin/python",
                "/srv/chatstack/app/entrypoint.py",
                "manage",
                *args,
            ],
            timeout=120,
        )
        return proc.stdout

    def post(self, room: str, token: str, text: str) -> tuple[int, dict]:
        status, _, body = harness.http(
            f"{self.url}/api/rooms/{room}/messages",
            data=json.dumps({"message": text}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=10,
        )
        return status, json.loads(body or b"{}")

    def history_ids(self, room: str, after: int) -> list[int]:
        ids: list[int] = []
        while True:
            status, _, body = harness.http(
                f"{self.url}/api/rooms/{room}/messages?after={after}&limit=100"
            )
            assert status == 200, body
            page = json.loads(body)
            ids += [m["id"] for m in page["messages"]]
            if not page["has_more"] or not page["messages"]:
                return ids
            after = page["messages"][-1]["id"]


def wait_healthy(stack: Stack, timeout: float = 240) -> None:
    last: dict[str, str] = {}

    def all_healthy() -> bool:
        last.clear()
        for service in ("postgres", "redis", "web", "ws", "nginx"):
            for cid in stack.ids(service):
                last[f"{service}/{cid[:8]}"] = harness.health(cid)
        (migrate,) = stack.compose.container_ids("migrate", all_states=True)
        state = harness.inspect(migrate)["State"]
        last["migrate"] = f"{state['Status']}:{state['ExitCode']}"
        return (
            len(stack.ids("ws")) == harness.WS_REPLICAS
            and last["migrate"] == "exited:0"
            and all(v == "healthy" for k, v in last.items() if k != "migrate")
        )

    try:
        harness.wait_for(all_healthy, timeout=timeout, what="stack healthy", interval=2)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; states: {last}") from None


# Every test runs against a stack brought up by each compose tool: Debian's docker-compose
# 1.29 and Docker Compose v2+ (v5 here), from the same files.
@pytest.fixture(scope="module", params=["compose-v1", "compose-v2"])
def stack(request, built_images, tools, tmp_path_factory):
    compose = harness.Compose(
        tool=[tools[request.param]],
        project=f"{harness.PROJECT_PREFIX}-{request.param}-{os.getpid()}",
        workdir=tmp_path_factory.mktemp("compose-stack"),
        extra_env=STACK_ENV,
    )
    logs = harness.CACHE / "logs" / f"{compose.project}.log"
    try:
        started = time.monotonic()
        compose("up", "-d", "--no-build", timeout=900)
        running = Stack(compose)
        wait_healthy(running)
        TIMINGS[f"compose up until healthy ({compose.version})"] = time.monotonic() - started
        tokens = harness.run(
            [
                "docker",
                "exec",
                running.one("web"),
                "sh",
                "-c",
                "/opt/venv/bin/python /srv/chatstack/app/entrypoint.py manage create_users "
                f"--count {USERS} --prefix ctuser --tokens-out /tmp/tokens.txt >/dev/null "
                "&& cat /tmp/tokens.txt && rm /tmp/tokens.txt",
            ],
            timeout=120,
        ).stdout
        running.tokens = dict(line.split() for line in tokens.splitlines() if line.strip())
        assert len(running.tokens) == USERS
        yield running
    finally:
        logs.parent.mkdir(parents=True, exist_ok=True)
        out = compose("logs", "--no-color", "--tail", "300", check=False, timeout=120)
        logs.write_text(out.stdout + out.stderr)
        compose.down()
        leftovers = harness.run(
            [
                "docker",
                "ps",
                "-aq",
                "--filter",
                f"label=com.docker.compose.project={compose.project}",
            ],
            quiet=True,
        ).stdout.split()
        assert not leftovers, f"containers left behind: {leftovers}"


def users(stack: Stack, n: int, offset: int = 0) -> list[tuple[str, str]]:
    return sorted(stack.tokens.items())[offset : offset + n]


# --- health, users, files ----------------------------------------------------------------


def test_healthy_with_three_ws_replicas(stack):
    assert len(stack.ids("ws")) == 3
    assert len(stack.ids("web")) == 1 and len(stack.ids("nginx")) == 1
    # The load-test services stay behind their profile.
    for name in ("locust-master", "locust-worker", "locust-tokens"):
        assert stack.compose.container_ids(name, all_states=True) == []
    status, _, body = harness.http(f"{stack.url}/readyz")
    assert status == 200, body
    for port in stack.replica_ports().values():
        status, _, body = harness.http(f"http://127.0.0.1:{port}/readyz")
        assert status == 200 and json.loads(body)["status"] == "ready"


def test_non_root_and_read_only(stack):
    for service in ("migrate", "web", "ws", "nginx"):
        for cid in stack.compose.container_ids(service, all_states=True):
            info = harness.inspect(cid)
            host = info["HostConfig"]
            assert host["ReadonlyRootfs"] is True, service
            assert host["CapDrop"] == ["ALL"], service
            assert any("no-new-privileges" in opt for opt in host["SecurityOpt"]), service
            assert info["Config"]["User"].split(":")[0] not in ("", "0", "root"), service
    for service in ("web", "ws", "nginx", "postgres", "redis"):
        for cid in stack.ids(service):
            uid = harness.run(["docker", "exec", cid, "id", "-u"], quiet=True).stdout.strip()
            assert uid != "0", f"{service} runs as root"
    for service, path in (
        ("web", "/srv/chatstack/app"),
        ("ws", "/srv/chatstack/app"),
        ("nginx", "/etc/chat-nginx"),
    ):
        cid = stack.ids(service)[0]
        proc = harness.run(["docker", "exec", cid, "touch", f"{path}/x"], check=False, quiet=True)
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr, service
        proc = harness.run(["docker", "exec", cid, "touch", "/tmp/x"], check=False, quiet=True)
        assert proc.returncode == 0, f"{service}: /tmp is writable (tmpfs)"


def test_pages_static_files_and_metrics(stack):
    status, _, body = harness.http(f"{stack.url}/accounts/login/")
    assert status == 200 and b"<form" in body
    manifest = json.loads(
        harness.run(
            ["docker", "exec", stack.one("web"), "cat", "/srv/chatstack/static/staticfiles.json"],
            quiet=True,
        ).stdout
    )["paths"]
    status, headers, body = harness.http(f"{stack.url}/static/{manifest['chat/room.js']}")
    assert status == 200 and len(body) > 100
    assert "immutable" in headers.get("Cache-Control", "")
    # /metrics: never through nginx, but on every process for Prometheus.
    status, _, _ = harness.http(f"{stack.url}/metrics")
    assert status in (403, 404)
    web_port = harness.published_port(stack.one("web"))
    for port in [web_port, *stack.replica_ports().values()]:
        status, _, body = harness.http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and b"# TYPE" in body


# --- messages across replicas --------------------------------------------------------------


async def connect_all(specs: list[tuple[str, str, str | None]]) -> list[ChatClient]:
    """specs: (url, (username, token), reconnect_url) -> connected clients."""
    clients = []
    for url, (name, token), back in specs:
        client = ChatClient(url, token, name=name, reconnect_url=back)
        clients.append(await client.connect())
    return clients


async def test_room_and_private_messages_cross_replicas(stack):
    room = f"ct-{uuid.uuid4().hex[:6]}"
    ports = list(stack.replica_ports().values())
    people = users(stack, 5)
    specs = [(stack.ws_url(room, port), people[i], None) for i, port in enumerate(ports)]
    specs += [(stack.ws_url(room), people[3], None), (stack.ws_url(room), people[4], None)]
    clients = await connect_all(specs)
    try:
        names = {name for name, _ in people}
        for c in clients:
            await c.until(lambda c=c: c.users == names, timeout=15, what="full user_list")
        # Room message from replica 1 reaches every replica and both nginx clients.
        sent = await clients[0].say("hello from replica 1")
        for c in clients:
            await c.until(lambda c=c: sent["id"] in c.messages, timeout=10, what="room message")
        # Private message (sent through nginx) to the user on replica 3 only.
        target = clients[2]
        await clients[3].send({"type": "private_message", "to": target.name, "message": "psst"})
        pm = await target.next("private_message", lambda f: f["message"] == "psst", timeout=10)
        assert pm["user"] == clients[3].name
        await clients[3].next("private_message_delivered", timeout=10)
        # The HTTP API (nginx -> gunicorn) reaches WebSocket clients on every replica.
        status, posted = stack.post(room, people[0][1], "from the API")
        assert status == 201, posted
        for c in clients:
            await c.until(lambda c=c: posted["id"] in c.messages, timeout=10, what="API push")
    finally:
        await close_all(clients)


# --- the loadtest profile ----------------------------------------------------------------


def test_locust_from_the_loadtest_profile_runs_a_scenario_against_the_stack(stack):
    """What `--profile loadtest` gives users: tokens made by the app image, then the repo's
    locustfile in the Locust image, through nginx, judged by its own criteria (exit 0 only
    if every delivery arrived)."""
    env = {"LOCUST_TOKEN_USERS": "30"}
    stack.compose("--profile", "loadtest", "run", "--rm", "locust-tokens", env=env, timeout=300)
    proc = stack.compose(
        "--profile", "loadtest", "run", "--rm", "--no-deps",
        "-e", "LOCUST_SCENARIO=fanout", "-e", "LOCUST_SETTLE=3", "-e", "LOCUST_DRAIN=3",
        "-e", "LOCUST_RECONCILE_TIME=5", "-e", "LOCUST_MAX_P99=60000",
        "locust-master",
        "--locustfile", "/srv/loadtests/locustfile.py", "--host", "http://nginx:8080",
        "--headless", "--users", "20", "--spawn-rate", "20", "--run-time", "25s",
        env=env, timeout=300, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "criterion ok" in out and "MISS" not in out, out[-4000:]


# --- Redis away and back -------------------------------------------------------------------


def app_containers_state(stack: Stack) -> dict[str, tuple[str, int]]:
    out = {}
    for service in APP_SERVICES:
        for cid in stack.ids(service):
            info = harness.inspect(cid)
            out[cid] = (info["State"]["StartedAt"], info["RestartCount"])
    return out


async def test_redis_disconnected_and_reconnected_recovers_without_restarts(stack):
    before = app_containers_state(stack)
    redis = stack.one("redis")
    (network,) = [
        n for n in harness.inspect(redis)["NetworkSettings"]["Networks"] if n.endswith("_data")
    ]
    web_port = harness.published_port(stack.one("web"))
    ready_urls = [
        f"http://127.0.0.1:{p}/readyz" for p in [web_port, *stack.replica_ports().values()]
    ]
    room = f"ct-{uuid.uuid4().hex[:6]}"
    people = users(stack, 3, offset=5)
    ports = list(stack.replica_ports().values())
    early = await connect_all(
        [(stack.ws_url(room, port), people[i], stack.ws_url(room)) for i, port in enumerate(ports)]
    )
    reconnected = False
    try:
        harness.run(["docker", "network", "disconnect", "--force", network, redis])

        def all_unready():
            answers = [harness.http(url, timeout=8) for url in ready_urls]
            return all(s == 503 and b"redis" in body for s, _, body in answers)

        await asyncio.to_thread(
            harness.wait_for, all_unready, timeout=60, what="/readyz 503 (redis)"
        )
        harness.run(["docker", "network", "connect", "--alias", "redis", network, redis])
        reconnected = True

        def all_ready():
            return all(harness.http(url, timeout=8)[0] == 200 for url in ready_urls)

        await asyncio.to_thread(harness.wait_for, all_ready, timeout=90, what="/readyz 200 again")
        # Fresh clients on every replica talk across replicas again…
        later_people = users(stack, 3, offset=8)
        later = await connect_all(
            [(stack.ws_url(room, port), later_people[i], None) for i, port in enumerate(ports)]
        )
        try:
            sent = await later[0].say("after the outage")
            for c in later:
                await c.until(lambda c=c: sent["id"] in c.messages, timeout=15, what="delivery")
            # …and the clients from before the outage have it too (live, or by resume).
            for c in early:
                await c.until(lambda c=c: sent["id"] in c.messages, timeout=60, what="recovery")
        finally:
            await close_all(later)
    finally:
        if not reconnected:
            harness.run(
                ["docker", "network", "connect", "--alias", "redis", network, redis], check=False
            )
        await close_all(early)
    assert app_containers_state(stack) == before, "an app container restarted"


# --- a ws container stopped under traffic --------------------------------------------------


async def test_ws_container_stopped_under_traffic_loses_no_message(stack):
    room = f"ct-{uuid.uuid4().hex[:6]}"
    replicas = stack.replica_ports()
    (_, keep_port), (stop_id, stop_port), (_, other_port) = list(replicas.items())
    people = users(stack, 8, offset=0)
    via_nginx = stack.ws_url(room)
    # Two receivers straight on each replica (coming back through nginx), two via nginx.
    specs = []
    for i, port in enumerate([keep_port, stop_port, other_port]):
        specs += [
            (stack.ws_url(room, port), people[2 * i], via_nginx),
            (stack.ws_url(room, port), people[2 * i + 1], via_nginx),
        ]
    specs += [(via_nginx, people[6], via_nginx), (via_nginx, people[7], via_nginx)]
    receivers = await connect_all(specs)
    on_stopped = receivers[2:4]
    sender = await connect_all([(stack.ws_url(room, keep_port), users(stack, 1, 14)[0], None)])
    sender = sender[0]
    api_token = users(stack, 1, 15)[0][1]
    first_id = max(c.last_id for c in receivers)
    expected: set[int] = set()
    stop_result: dict = {}

    def stop_replica():
        started = time.monotonic()
        harness.run(["docker", "stop", "--time", "30", stop_id], timeout=60)
        stop_result["seconds"] = time.monotonic() - started
        stop_result["exit"] = harness.inspect(stop_id)["State"]["ExitCode"]

    stopper = threading.Thread(target=stop_replica)
    try:
        for n in range(60):
            if n == 10:
                stopper.start()
            if n % 2:
                sent = await sender.say(f"ws {n}")
                expected.add(sent["id"])
            else:
                status, posted = await asyncio.to_thread(stack.post, room, api_token, f"api {n}")
                assert status == 201, posted
                expected.add(posted["id"])
            await asyncio.sleep(0.08)
        await asyncio.to_thread(stopper.join, 60)
        assert stop_result["exit"] == 0, f"replica did not drain cleanly: {stop_result}"
        assert stop_result["seconds"] < 25, stop_result
        for c in receivers:
            await c.until(
                lambda c=c: expected <= set(c.messages),
                timeout=60,
                what=f"all {len(expected)} messages",
            )
        # The stopped replica closed its sockets with 1012 and its clients came back.
        for c in on_stopped:
            assert 1012 in c.closes and c.connections >= 2, (c.name, c.closes)
        # Exactly once: no connection was handed a live message twice.
        for c in receivers:
            for live in c.live:
                assert len(live) == len(set(live)), c.name
        # And nothing else was stored: what the clients have is what the room holds.
        stored = set(stack.history_ids(room, first_id))
        assert stored == expected
        for c in receivers:
            assert {i for i in c.messages if i > first_id} == expected, c.name
    finally:
        if stopper.is_alive():
            stopper.join(60)
        await close_all([*receivers, sender])
        harness.run(["docker", "start", stop_id], check=False)
