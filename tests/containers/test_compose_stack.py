"""The compose stack, up for real: postgres, redis, migrate, web, 3 ws replicas and nginx,
from compose/compose.yaml plus the test-only override (images made with no registry),
brought up once by docker-compose 1.29 and once by Docker Compose v2+ (v5).

Through nginx and straight to each replica (each publishes its port on 127.0.0.1 in the
test override): messages cross replicas; a ws container stopped under traffic drains
(1012) and its clients resume elsewhere without losing a message; Redis cut off the
network and put back recovers with no restart (readiness stays up, the outage shows in
/readyz's body and in /metrics); every container is non-root, the app and nginx run on
read-only roots, and every container has log rotation and resource limits.

Releases: probes answer a pod-IP Host under a real ALLOWED_HOSTS; old and new web versions
side by side serve every asset their pages name (nginx asks the next web peer on a 404);
compose/rolling-upgrade.sh replaces web and every ws replica under traffic with no message
lost; recreated ws containers are found by nginx without a restart.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import threading
import time
import uuid

import pytest

from loadtests.chatclient.aio import ChatClient, close_all

from . import harness
from .conftest import TIMINGS

STACK_ENV = {
    # Short TTL and drain so failures show within the test's patience; senders go faster
    # than a person (rate limits have their own tests in tests/core).
    "CHAT_PRESENCE_TTL": "5",
    "CHAT_DRAIN_TIMEOUT": "8",
    "CHAT_RATE_LIMIT_PER_SECOND": "200",
    "CHAT_RATE_LIMIT_BURST": "400",
    # Every socket and room here comes from one address and a few users, as in a load test.
    "CHAT_WS_PER_ADDRESS": "100000",
    "NGINX_WS_CONN_PER_ADDRESS": "",
    "NGINX_WS_RATE": "",
    "NGINX_AUTH_RATE": "",
    "CHAT_ROOMS_PER_USER_PER_HOUR": "10000",
    "LOG_LEVEL": "INFO",
}
APP_SERVICES = ("web", "ws")
USERS = 40
# What pages link: stylesheet, icon, scripts (hashed names, ManifestStaticFilesStorage).
STATIC_LINK = re.compile(r'(?:href|src)="(/static/[^"]+)"')


class Stack:
    def __init__(self, compose: harness.Compose, tool: str):
        self.compose = compose
        self.tool = tool  # "compose-v1" or "compose-v2"
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
        running = Stack(compose, request.param)
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

        # Readiness stays up (every process would otherwise leave its Service at once and
        # clients would meet nginx's 502); the outage shows in /readyz's body and /metrics.
        def redis_seen_as(state_ok: bool):
            answers = [harness.http(url, timeout=8) for url in ready_urls]
            states = [(s, json.loads(body)["dependencies"]["redis"]) for s, _, body in answers]
            if all(s == 200 and (r == "ok") == state_ok for s, r in states):
                return states
            return None

        await asyncio.to_thread(
            harness.wait_for,
            lambda: redis_seen_as(False),
            timeout=60,
            what="/readyz 200 naming redis down",
        )
        for url in ready_urls:
            status, _, body = harness.http(url.replace("/readyz", "/metrics"), timeout=8)
            assert status == 200
            assert re.search(r'chat_dependency_up\{[^}]*"redis"[^}]*\} 0', body.decode()), url
        harness.run(["docker", "network", "connect", "--alias", "redis", network, redis])
        reconnected = True
        await asyncio.to_thread(
            harness.wait_for, lambda: redis_seen_as(True), timeout=90, what="redis ok again"
        )
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


# --- limits and logs -----------------------------------------------------------------------


def test_every_container_has_log_rotation_and_limits(stack):
    """What compose.yaml asks for reaches the engine, through either tool: json-file logs
    that rotate, and memory, CPU and process limits; and the limits leave room."""
    containers = {
        f"{service}/{cid[:8]}": cid
        for service in ("postgres", "redis", "migrate", "web", "ws", "nginx")
        for cid in stack.compose.container_ids(service, all_states=True)
    }
    assert len(containers) == 5 + harness.WS_REPLICAS
    for name, cid in containers.items():
        host = harness.inspect(cid)["HostConfig"]
        assert host["LogConfig"] == {
            "Type": "json-file",
            "Config": {"max-size": "10m", "max-file": "5"},
        }, name
        assert host["Memory"] > 0 and host["NanoCpus"] == 10**9 and host["PidsLimit"] > 0, name
    for cid in stack.ids("ws"):
        assert harness.inspect(cid)["HostConfig"]["Memory"] == 448 * 2**20
    for cid in stack.ids("ws"):
        nofile = {"Name": "nofile", "Soft": 16384, "Hard": 16384}
        assert nofile in harness.inspect(cid)["HostConfig"]["Ulimits"], cid
    # A limit that a quiet stack already presses on would kill it under load.
    running = [cid for cid in containers.values() if harness.inspect(cid)["State"]["Running"]]
    out = harness.run(
        ["docker", "stats", "--no-stream", "--format", "{{.ID}} {{.MemPerc}}", *running],
        quiet=True,
    ).stdout
    usage = {cid[:12]: float(perc.rstrip("%")) for cid, perc in map(str.split, out.splitlines())}
    assert len(usage) == len(running) and max(usage.values()) < 60, usage


# --- probes with a real ALLOWED_HOSTS --------------------------------------------------------


def test_probes_answer_a_pod_ip_host_with_a_real_allowed_hosts(stack):
    """ALLOWED_HOSTS=chat.example.com, as in production: /healthz, /readyz and /metrics
    answer a request whose Host is the container's own IP:8000 (what a kubelet or
    Prometheus sends) on web and ws, while a page with that Host is still refused (400)."""
    if stack.tool != "compose-v1":
        pytest.skip("plain `docker run` of the app image beside the stack: run once, with v1")
    edge, data = stack.compose.network("edge"), stack.compose.network("data")
    created: list[str] = []
    try:
        for role in APP_SERVICES:
            env = harness.inspect(stack.ids(role)[0])["Config"]["Env"]
            env = [e for e in env if not e.startswith("ALLOWED_HOSTS=")]
            env.append("ALLOWED_HOSTS=chat.example.com")
            cmd = ["docker", "create", "--network", edge, "--publish", "127.0.0.1::8000"]
            # The project's label: the fixture's `down` removes it whatever happens here.
            cmd += ["--label", f"com.docker.compose.project={stack.compose.project}"]
            cmd += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
            for item in env:
                cmd += ["--env", item]
            cid = harness.run([*cmd, harness.IMAGES["app"], role], quiet=True).stdout.strip()
            created.append(cid)
            harness.run(["docker", "network", "connect", data, cid], quiet=True)
            harness.run(["docker", "start", cid], quiet=True)
        for role, cid in zip(APP_SERVICES, created, strict=True):
            pod_ip = {"Host": f"{harness.address(cid, edge)}:8000"}
            base = f"http://127.0.0.1:{harness.published_port(cid)}"
            harness.wait_for(
                lambda base=base, pod_ip=pod_ip: (
                    harness.http(f"{base}/healthz", headers=pod_ip)[0] == 200
                ),
                timeout=90,
                what=f"{role}: /healthz with Host {pod_ip['Host']}",
            )
            status, _, body = harness.http(f"{base}/readyz", headers=pod_ip)
            assert status == 200, (role, body)
            ready = json.loads(body)
            assert ready["status"] == "ready", (role, ready)
            assert ready["dependencies"] == {"database": "ok", "redis": "ok"}, (role, ready)
            status, _, body = harness.http(f"{base}/metrics", headers=pod_ip)
            assert status == 200 and b"# TYPE" in body, role
            # Every other path keeps the host check: the pod IP is not a name of the site.
            assert harness.http(f"{base}/chat/", headers=pod_ip)[0] == 400, role
            status, _, _ = harness.http(f"{base}/chat/", headers={"Host": "chat.example.com"})
            assert status in (200, 302), (role, status)
    finally:
        for cid in created:
            harness.run(["docker", "rm", "-f", cid], check=False, quiet=True)


# --- releases: old and new side by side, rolling upgrade, re-resolution ---------------------


@pytest.fixture(scope="module")
def next_image(built_images) -> str:
    """The app image of a next release: other hashed names for the stylesheet and a script."""
    started = time.monotonic()
    harness.build_changed_app_image(built_images["app"], harness.NEXT_APP_IMAGE)
    TIMINGS["next release's app image"] = time.monotonic() - started
    return harness.NEXT_APP_IMAGE


def new_containers(stack: Stack, service: str, before: set[str]) -> list[str]:
    return [cid for cid in stack.ids(service) if cid not in before]


def wait_container_healthy(cid: str, timeout: float = 120) -> None:
    harness.wait_for(
        lambda: harness.health(cid) == "healthy",
        timeout=timeout,
        what=f"{cid[:12]} healthy",
        interval=2,
    )


def static_manifest(cid: str) -> dict[str, str]:
    out = harness.run(
        ["docker", "exec", cid, "cat", "/srv/chatstack/static/staticfiles.json"], quiet=True
    ).stdout
    return json.loads(out)["paths"]


def nginx_access_log(stack: Stack) -> list[dict]:
    out = harness.run(["docker", "logs", stack.one("nginx")], quiet=True).stdout
    lines = []
    for line in out.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


def test_old_and_new_web_side_by_side_serve_every_asset_their_pages_name(stack, next_image):
    """Mid-rollout: a web container of the next release (other hashed names, and only its
    own files) beside the old one, both behind the name `web`. Each page, from either
    version, gets every asset it names through nginx: a hashed name the chosen web peer lacks
    is a 404 there, and nginx asks the other peer (proxy_next_upstream http_404)."""
    (old_web,) = stack.ids("web")
    before = set(stack.compose.container_ids("web", all_states=True))
    stack.compose(
        "up", "-d", "--no-deps", "--no-recreate", "--scale", "web=2", "web",
        env={"CHAT_IMAGE": next_image}, timeout=300,
    )  # fmt: skip
    (new_web,) = new_containers(stack, "web", before)
    try:
        wait_container_healthy(new_web)
        assert harness.inspect(new_web)["Image"] == harness.image_id(next_image)
        old_paths, new_paths = static_manifest(old_web), static_manifest(new_web)
        for name in ("chat/chat.css", "chat/index.js"):
            assert old_paths[name] != new_paths[name], name
        version_of = {
            f"/static/{old_paths['chat/chat.css']}": "old",
            f"/static/{new_paths['chat/chat.css']}": "new",
        }
        seen: dict[str, int] = {"old": 0, "new": 0}
        fetched = 0
        for _ in range(40):
            status, _, body = harness.http(f"{stack.url}/chat/")
            assert status == 200, body[:300]
            links = STATIC_LINK.findall(body.decode())
            (version,) = {version_of[link] for link in links if link in version_of}
            seen[version] += 1
            assert len(links) >= 3, links
            for link in links:
                status, headers, asset = harness.http(stack.url + link)
                assert status == 200 and asset, (version, link, status)
                assert "immutable" in headers.get("Cache-Control", ""), link
                fetched += 1
        assert seen["old"] and seen["new"], seen
        # And the fallback was what made them all 200: some asset was a 404 on one peer first.
        retried = [
            line
            for line in nginx_access_log(stack)
            if line["uri"].startswith("/static/") and line["upstream_status"].startswith("404, ")
        ]
        assert retried and all(line["status"] == 200 for line in retried), retried[:3]
        harness.log(
            f"side by side: {seen} pages, {fetched} assets, {len(retried)} via the next peer"
        )
    finally:
        harness.run(["docker", "stop", "--time", "20", new_web], check=False)
        harness.run(["docker", "rm", new_web], check=False)
        # nginx may still have the removed container's address for NGINX_RESOLVER_VALID.
        time.sleep(6)


async def test_rolling_upgrade_under_traffic_loses_no_message(stack, next_image):
    """compose/rolling-upgrade.sh to the next release while clients sit on every ws replica
    and a sender posts through the HTTP API (nginx -> web, which is replaced too): every old
    web and ws container is replaced, one at a time, none restarts, nginx is not touched,
    and every client ends with every stored message (those on a replaced replica get 1012,
    reconnect through nginx and resume)."""
    room = f"ct-{uuid.uuid4().hex[:6]}"
    replicas = stack.replica_ports()
    old = {"ws": set(replicas), "web": set(stack.ids("web"))}
    nginx = stack.one("nginx")
    nginx_before = harness.inspect(nginx)["State"]["StartedAt"]
    people = users(stack, 2 * len(replicas) + 2, offset=16)
    via_nginx = stack.ws_url(room)
    specs = [
        (stack.ws_url(room, port), people[2 * i + k], via_nginx)
        for i, port in enumerate(replicas.values())
        for k in (0, 1)
    ]
    specs += [(via_nginx, person, via_nginx) for person in people[-2:]]
    receivers = await connect_all(specs)
    on_replicas = receivers[: 2 * len(replicas)]
    token = users(stack, 1, offset=35)[0][1]
    first_id = max(c.last_id for c in receivers)

    posted: set[int] = set()
    failures: list[str] = []
    done_at: list[float] = []  # monotonic time of each successful post

    def post(n: int) -> None:
        """One message, retried until the API takes it (a refused or failed attempt)."""
        for _ in range(100):
            try:
                status, _, body = harness.http(
                    f"{stack.url}/api/rooms/{room}/messages",
                    data=json.dumps({"message": f"rolling {n}"}).encode(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                    timeout=10,
                )
            except OSError as exc:
                failures.append(repr(exc))
            else:
                if status == 201:
                    posted.add(json.loads(body)["id"])
                    done_at.append(time.monotonic())
                    return
                failures.append(f"{status} {body[:80]!r}")
            time.sleep(0.2)
        raise AssertionError(f"message {n} never accepted: {failures[-5:]}")

    result: dict = {}

    def upgrade() -> None:
        script = harness.REPO / "compose" / "rolling-upgrade.sh"
        cmd = ["sh", str(script), *stack.compose.cmd(), "--", "migrate", "web", "ws"]
        env = {"CHAT_IMAGE": next_image, "ROLLING_TIMEOUT": "150", "ROLLING_STOP_TIMEOUT": "30"}
        started = time.monotonic()
        result["proc"] = harness.run(cmd, env=stack.compose.env(env), timeout=900, check=False)
        result["seconds"] = time.monotonic() - started

    upgrader = threading.Thread(target=upgrade)
    try:
        upgrader.start()
        n = after = 0
        while upgrader.is_alive() or after < 10:  # and ten more once it is done
            after += not upgrader.is_alive()
            await asyncio.to_thread(post, n)
            n += 1
            await asyncio.sleep(0.15)
        await asyncio.to_thread(upgrader.join, 60)
        proc = result["proc"]
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
        harness.log(
            f"rolling upgrade: {result['seconds']:.0f} s, {len(posted)} posts, "
            f"{len(failures)} refused attempts: {failures[:3]}"
        )
        # Posting never stopped for long: the API stayed reachable through the upgrade (one
        # attempt may time out on a busy machine; two in a row would not fit).
        gaps = [b - a for a, b in itertools.pairwise(done_at)]
        assert max(gaps) < 15, f"longest pause between accepted posts: {max(gaps):.1f} s"

        # Every old container was replaced by one of the next release; none restarted.
        for service, ids in old.items():
            now = stack.ids(service)
            assert len(now) == len(ids) and not set(now) & ids, (service, now, ids)
            for cid in now:
                info = harness.inspect(cid)
                assert info["Image"] == harness.image_id(next_image), service
                assert info["RestartCount"] == 0 and info["State"]["Running"], service
            for cid in ids:
                gone = harness.run(["docker", "inspect", cid], check=False, quiet=True)
                assert gone.returncode != 0, f"old {service} container {cid[:12]} left behind"
        nginx_now = harness.inspect(nginx)
        assert nginx_now["State"]["StartedAt"] == nginx_before and nginx_now["RestartCount"] == 0
        # A plain `up -d` afterwards finds them current (the docs promise it).
        serving = {service: set(stack.ids(service)) for service in ("web", "ws", "nginx")}
        stack.compose("up", "-d", "--no-build", env={"CHAT_IMAGE": next_image}, timeout=300)
        assert {service: set(stack.ids(service)) for service in serving} == serving

        # Zero lost: every stored message reached every client, once per connection.
        stored = set(stack.history_ids(room, first_id))
        assert posted <= stored and len(stored) >= 50, (len(posted), len(stored))
        for c in receivers:
            await c.until(
                lambda c=c: stored <= set(c.messages),
                timeout=60,
                what=f"all {len(stored)} messages",
            )
            for live in c.live:
                assert len(live) == len(set(live)), c.name
        for c in on_replicas:
            assert 1012 in c.closes and c.connections >= 2, (c.name, c.closes)
    finally:
        if upgrader.is_alive():
            upgrader.join(300)
        await close_all(receivers)


async def test_nginx_finds_recreated_ws_containers_without_a_restart(stack):
    """Every ws container replaced at once, with new addresses: WebSockets through nginx
    reach the new ones within seconds and are spread over all of them, and nginx was not
    restarted: it asks Docker's DNS again (NGINX_RESOLVER=auto)."""
    if stack.tool != "compose-v1":
        pytest.skip("nginx's behaviour, whatever recreated the containers: run once, with v1")
    nginx = stack.one("nginx")
    nginx_before = harness.inspect(nginx)["State"]["StartedAt"]
    edge = stack.compose.network("edge")
    old = set(stack.ids("ws"))
    old_addresses = {harness.address(cid, edge) for cid in old}
    stack.compose("stop", "ws", timeout=120)
    stack.compose("rm", "-f", "ws", timeout=120)
    # Docker hands the lowest free addresses out again, so a recreate often keeps them and
    # would prove nothing: placeholders hold the old ones (and any lower free address
    # before them) while the new containers start.
    placeholders: list[str] = []
    held: set[str] = set()
    while not old_addresses <= held and len(placeholders) < 20:
        cid = harness.run(
            ["docker", "run", "-d", "--network", edge, "--entrypoint", "sleep",
             "--label", f"com.docker.compose.project={stack.compose.project}",
             harness.IMAGES["app"], "300"],
            quiet=True,
        ).stdout.strip()  # fmt: skip
        placeholders.append(cid)
        held.add(harness.address(cid, edge))
    try:
        stack.compose("up", "-d", "--no-deps", "ws", timeout=300)
    finally:
        harness.run(["docker", "rm", "-f", *placeholders], check=False, quiet=True)
    new = stack.ids("ws")
    assert len(new) == harness.WS_REPLICAS and not set(new) & old
    for cid in new:
        wait_container_healthy(cid)
    new_addresses = {harness.address(cid, edge) for cid in new}
    assert not new_addresses & old_addresses, (old_addresses, new_addresses)

    room = f"ct-{uuid.uuid4().hex[:6]}"
    people = users(stack, 30)
    clients: list[ChatClient] = []
    try:
        deadline = time.monotonic() + 30
        for name, token in people:
            while True:
                try:
                    client = ChatClient(stack.ws_url(room), token, name=name)
                    clients.append(await client.connect())
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        sent = await clients[0].say("after the recreate")
        for c in clients:
            await c.until(lambda c=c: sent["id"] in c.messages, timeout=15, what="delivery")
        # Spread over every new replica (30 sockets in a random rotation over three).
        counts = {}
        for cid, port in stack.replica_ports().items():
            _, _, body = harness.http(f"http://127.0.0.1:{port}/metrics")
            match = re.search(r"^chat_ws_connections (\S+)$", body.decode(), re.M)
            counts[cid[:12]] = float(match.group(1)) if match else 0.0
        assert sum(counts.values()) == len(people) and all(counts.values()), counts
    finally:
        await close_all(clients)
    nginx_now = harness.inspect(nginx)
    assert nginx_now["State"]["StartedAt"] == nginx_before and nginx_now["RestartCount"] == 0
