"""Real server processes: two daphne instances on one Redis, the embedded default, settings.

The cross-process tests start two independent `entrypoint.py ws` processes (each with
its own channel-layer connection) on the test PostgreSQL and Redis, and talk to them
with a real WebSocket client.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import websockets
from django.conf import settings as django_settings

from accounts.models import ApiToken
from localstack.servers import Proc, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = str(ROOT / "app" / "entrypoint.py")
MANAGE = str(ROOT / "app" / "manage.py")
CLEAN = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN}
    env.update(extra)
    return env


def service_env(settings_module: str = "config.settings.test", **extra: str) -> dict[str, str]:
    """The environment of a server process a test starts on the test PostgreSQL and Redis."""
    return base_env(
        DJANGO_SETTINGS_MODULE=settings_module,
        DATABASE_URL=database_url(),
        REDIS_URL=os.environ["REDIS_URL"],
        **extra,
    )


def manage_shell(code: str, **env: str) -> subprocess.CompletedProcess:
    """`manage.py shell -c code` under the local settings and `env` (nothing inherited
    that names a database or Redis)."""
    return subprocess.run(
        [sys.executable, MANAGE, "shell", "-c", code],
        env=base_env(DJANGO_SETTINGS_MODULE="config.settings.local", **env),
        capture_output=True,
        text=True,
        check=False,
    )


def database_url() -> str:
    """The test database as a URL, for server processes a test starts."""
    db = django_settings.DATABASES["default"]
    return f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def start_ws(tmp: Path, name: str, env: dict[str, str], role: str = "ws") -> tuple[Proc, int]:
    port = free_port()
    proc = Proc(
        name,
        [sys.executable, ENTRYPOINT, role, "--port", str(port)],
        tmp / f"{name}.log",
        env={**env, "PORT": str(port), "REPLICA_NAME": name},
    )
    wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, 30, name, proc)
    return proc, port


class Client:
    def __init__(self, conn):
        self.conn = conn

    @classmethod
    async def open(cls, port: int, room: str, token: str) -> Client:
        conn = await websockets.connect(
            f"ws://127.0.0.1:{port}/ws/chat/{room}/",
            additional_headers={"Authorization": f"Bearer {token}"},
        )
        client = cls(conn)
        assert (await client.recv())["type"] == "history"
        return client

    async def recv(self, timeout: float = 5) -> dict:
        return json.loads(await asyncio.wait_for(self.conn.recv(), timeout))

    async def recv_type(self, kind: str, timeout: float = 5) -> dict:
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame

    async def send(self, frame: dict) -> None:
        await self.conn.send(json.dumps(frame))


@pytest.fixture(scope="module")
def two_instances(django_db_setup, django_db_blocker, tmp_path_factory):
    """Two independent daphne processes on the test database and the test Redis."""
    tmp = tmp_path_factory.mktemp("instances")
    env = service_env(CHAT_PRESENCE_TTL="3")
    procs = [start_ws(tmp, name, env) for name in ("instance-a", "instance-b")]
    yield [port for _, port in procs]
    for proc, _ in procs:
        proc.stop()


@pytest.mark.django_db(transaction=True)
def test_room_private_and_presence_cross_instances(two_instances, make_user):
    port_a, port_b = two_instances
    tokens = {name: ApiToken.issue(make_user(name))[1] for name in ("alice", "bob", "carol")}

    async def scenario():
        alice = await Client.open(port_a, "lobby", tokens["alice"])
        assert await alice.recv() == {"type": "user_list", "users": ["alice"]}
        bob = await Client.open(port_b, "lobby", tokens["bob"])
        assert await bob.recv() == {"type": "user_list", "users": ["alice", "bob"]}
        assert await alice.recv() == {"type": "user_join", "user": "bob"}
        # carol is connected only to instance B, in another room
        carol = await Client.open(port_b, "elsewhere", tokens["carol"])

        await alice.send({"type": "chat_message", "message": "across"})
        sent = await alice.recv_type("chat_message")
        assert await bob.recv_type("chat_message") == sent

        await alice.send({"type": "private_message", "to": "carol", "message": "psst"})
        receipt = await alice.recv_type("private_message_delivered")
        incoming = await carol.recv_type("private_message")
        assert incoming["id"] == receipt["id"] and incoming["user"] == "alice"

        await bob.conn.close()
        assert await alice.recv_type("user_leave") == {"type": "user_leave", "user": "bob"}
        await alice.conn.close()
        await carol.conn.close()

    asyncio.run(scenario())


def test_embedded_default_smoke(tmp_path):
    """`make run`'s configuration: one process, SQLite, in-memory layer and presence."""
    env = base_env(CHAT_DATA_DIR=str(tmp_path), DEMO_PASSWORD="demo-pass-123")
    proc, port = start_ws(tmp_path, "embedded", env, role="run")
    try:
        assert http_status(f"http://127.0.0.1:{port}/chat/") == 200
        assert http_status(f"http://127.0.0.1:{port}/static/chat/room.js") == 200
        assert (tmp_path / "db.sqlite3").exists()
        assert "in-memory channel layer" in proc.tail(50)
        tokens = {}
        for name in ("alice", "bob"):
            done = subprocess.run(
                [sys.executable, MANAGE, "create_token", name],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            tokens[name] = done.stdout.strip()

        async def scenario():
            alice = await Client.open(port, "lobby", tokens["alice"])
            await alice.recv()
            bob = await Client.open(port, "lobby", tokens["bob"])
            assert await bob.recv() == {"type": "user_list", "users": ["alice", "bob"]}
            await bob.send({"message": "hi alice"})
            assert (await alice.recv_type("chat_message"))["message"] == "hi alice"
            await alice.send({"message": "/pm bob hello"})
            assert (await bob.recv_type("private_message"))["message"] == "hello"
            await alice.conn.close()
            assert (await bob.recv_type("user_leave"))["user"] == "alice"
            await bob.conn.close()

        asyncio.run(scenario())
    finally:
        proc.stop()


def manage_check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, MANAGE, "check"],
        env=base_env(DJANGO_SETTINGS_MODULE="config.settings.production", **env),
        capture_output=True,
        text=True,
        check=False,
    )


def test_missing_secret_key_stops_start_up_with_one_sentence():
    done = manage_check(ALLOWED_HOSTS="chat.example")
    assert done.returncode != 0
    assert "SECRET_KEY is not set" in done.stderr


def test_missing_allowed_hosts_stops_start_up():
    done = manage_check(SECRET_KEY="x" * 50)
    assert done.returncode != 0
    assert "ALLOWED_HOSTS is not set" in done.stderr


def test_unknown_channel_layer_is_refused():
    done = manage_check(
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS="a",
        REDIS_URL="redis://h:1/0",
        CHAT_CHANNEL_LAYER="kafka",
    )
    assert done.returncode != 0 and "CHAT_CHANNEL_LAYER='kafka'" in done.stderr


def test_complete_production_settings_pass_checks():
    done = manage_check(SECRET_KEY="x" * 50, ALLOWED_HOSTS="chat.example")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("layer", "backend"),
    [
        ("redis", "realtime.layers.CountingRedisChannelLayer"),
        ("pubsub", "realtime.layers.SignallingPubSubChannelLayer"),
    ],
)
def test_redis_url_selects_the_layer(layer, backend):
    code = "from django.conf import settings as s; print(s.CHANNEL_LAYERS['default']['BACKEND'])"
    done = manage_shell(code, REDIS_URL="redis://h:1/0", CHAT_CHANNEL_LAYER=layer)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == backend


def test_ws_raises_its_open_files_limit_to_the_hard_limit(tmp_path):
    """Started from a shell with Debian's soft 1024, a replica could hold ~1,000 sockets."""
    import resource
    import shutil

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard limit here is {hard}: nothing to raise")
    prlimit = shutil.which("prlimit")
    assert prlimit, "prlimit (util-linux) is needed to start a process with a low soft limit"
    port = free_port()
    env = base_env(CHAT_DATA_DIR=str(tmp_path), DEBUG="1", PORT=str(port), LOG_LEVEL="INFO")
    proc = Proc(
        "ws-nofile",
        [prlimit, "--nofile=1024:", sys.executable, ENTRYPOINT, "ws", "--port", str(port)],
        tmp_path / "ws.log",
        env=env,
    )
    try:
        wait_until(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, 30, "ws", proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        (line,) = [x for x in limits.splitlines() if x.startswith("Max open files")]
        soft, hard_seen = line.split()[3:5]
        assert soft == hard_seen != "1024", line
        wait_until(lambda: "open-files limit: soft" in proc.tail(50), 10, "log line", proc)
        assert "(was 1024)" in proc.tail(50)
    finally:
        proc.stop()


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("", "gc: thresholds (50000, 20, 100)"),  # the default
        ("1000,10,10", "gc: thresholds (1000, 10, 10)"),
        ("python", "gc: thresholds (700, 10, 10), 0 objects"),
    ],
)
def test_ws_tunes_its_garbage_collector(tmp_path, setting, says):
    """The ws role freezes what start-up made and sets CHAT_WS_GC_THRESHOLD, and says so."""
    port = free_port()
    extra = {"CHAT_WS_GC_THRESHOLD": setting} if setting else {}
    env = base_env(
        CHAT_DATA_DIR=str(tmp_path), DEBUG="1", PORT=str(port), LOG_LEVEL="INFO", **extra
    )
    proc = Proc(
        "ws-gc", [sys.executable, ENTRYPOINT, "ws", "--port", str(port)], tmp_path / "l", env=env
    )
    try:
        wait_until(lambda: "gc: thresholds" in proc.tail(50), 30, "gc log line", proc)
        (line,) = [x for x in proc.tail(50).splitlines() if "gc: thresholds" in x]
        assert says in line
        frozen = int(line.split(", ")[-1].split(" objects")[0].split()[-1])
        assert (frozen > 10_000) == (setting != "python"), line
    finally:
        proc.stop()


def test_a_wrong_gc_threshold_stops_start_up_with_one_sentence():
    done = manage_check(SECRET_KEY="x" * 50, ALLOWED_HOSTS="a", CHAT_WS_GC_THRESHOLD="lots")
    assert done.returncode != 0 and "CHAT_WS_GC_THRESHOLD='lots'" in done.stderr
