"""Health, readiness and metrics as a kubelet and Prometheus meet them.

They address a pod by its IP (`Host: 10.244.1.5:8000`), which ALLOWED_HOSTS never lists:
the three endpoints answer anyway, every other path keeps the host check. Readiness is
"up and not draining"; dependencies are reported, not failed on. The same is checked on
real gunicorn and daphne processes under production settings.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import websockets
from django.conf import settings as django_settings
from django.test import override_settings

from chat import health
from chat.models import Room
from chat.protocol import MAX_FRAME_BYTES
from localstack.servers import Proc, free_port, wait_until

from .test_processes import ENTRYPOINT, base_env, database_url

POD_HOST = "10.244.1.5:8000"
PUBLIC = ["chat.example.com"]


@pytest.fixture
def fresh_checks(monkeypatch):
    """No Redis client or running check carried over from another test."""
    monkeypatch.setattr(health, "_redis", None)
    monkeypatch.setattr(health, "_running", {})
    monkeypatch.setattr(health, "draining", False)


def metric(client, name: str, labels: str) -> float:
    text = client.get("/metrics", HTTP_HOST=POD_HOST).content.decode()
    found = re.search(rf"^{name}{{{labels}}} (\S+)$", text, re.M)
    assert found, f"{name}{{{labels}}} not in /metrics"
    return float(found.group(1))


@pytest.mark.django_db
@override_settings(ALLOWED_HOSTS=PUBLIC)
def test_endpoints_answer_a_pod_ip_host_and_nothing_else_does(client, fresh_checks):
    for path in ("/healthz", "/readyz", "/metrics"):
        for method in (client.get, client.head):
            response = method(path, HTTP_HOST=POD_HOST)
            assert response.status_code == 200, (path, method)
        assert "no-cache" in response["Cache-Control"]
    # The host check still guards everything else.
    assert client.get("/chat/", HTTP_HOST=POD_HOST).status_code == 400
    assert client.get("/accounts/login/", HTTP_HOST=POD_HOST).status_code == 400
    assert client.get("/chat/", HTTP_HOST="chat.example.com").status_code == 200
    assert client.post("/healthz", HTTP_HOST=POD_HOST).status_code == 405
    assert client.get("/readyz").json() == {
        "status": "ready",
        "dependencies": {"database": "ok", "redis": "ok"},
    }


@pytest.mark.django_db
def test_a_dependency_outage_is_reported_but_the_process_stays_ready(client, fresh_checks):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "status": "ready",
            "dependencies": {"database": "ok", "redis": "ConnectionError"},
        }
        assert metric(client, "chat_dependency_up", 'dependency="redis"') == 0
    health._redis = None
    assert client.get("/readyz").json()["dependencies"]["redis"] == "ok"
    assert metric(client, "chat_dependency_up", 'dependency="redis"') == 1
    assert metric(client, "chat_dependency_up", 'dependency="database"') == 1


@pytest.mark.django_db
def test_draining_is_what_makes_a_process_unready(client, fresh_checks):
    health.draining = True
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "draining"
    assert client.get("/healthz").status_code == 200


def test_a_hung_check_reports_timeout_and_is_not_started_twice(rf, monkeypatch, fresh_checks):
    calls = []
    release = threading.Event()

    def hung() -> None:
        calls.append(time.monotonic())
        release.wait(10)

    monkeypatch.setattr(health, "_checks", lambda: {"database": hung})
    try:
        started = time.monotonic()
        assert health.dependency_states(wait=0.2) == {"database": "timeout"}
        assert health.dependency_states(wait=0.2) == {"database": "timeout"}
        assert time.monotonic() - started < 2
        assert len(calls) == 1, "a second probe started another check of a hung dependency"
    finally:
        release.set()
    wait_until(lambda: health._running["database"].done(), 5, "hung check to finish")
    assert health.dependency_states(wait=1) == {"database": "ok"}
    assert len(calls) == 2


# --- real processes, production settings -------------------------------------------------


def get(url: str, host: str) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture(scope="module")
def production_servers(django_db_setup, django_db_blocker, tmp_path_factory):
    """gunicorn (web) and daphne (ws) with production settings and a public ALLOWED_HOSTS."""
    tmp = tmp_path_factory.mktemp("production")
    env = base_env(
        DJANGO_SETTINGS_MODULE="config.settings.production",
        SECRET_KEY="x" * 50,
        ALLOWED_HOSTS=",".join(PUBLIC),
        CSRF_TRUSTED_ORIGINS="https://chat.example.com",
        DATABASE_URL=database_url(),
        REDIS_URL=django_settings.REDIS_URL,
        STATIC_ROOT=str(tmp / "static"),
        CHAT_DATA_DIR=str(tmp / "data"),
        GUNICORN_WORKERS="1",
    )
    subprocess.run(
        [sys.executable, ENTRYPOINT, "collectstatic", "--verbosity", "0"], env=env, check=True
    )
    procs, ports = [], {}
    try:
        for role in ("web", "ws"):
            port = free_port()
            proc = Proc(
                role,
                [sys.executable, ENTRYPOINT, role],
                tmp / f"{role}.log",
                env={**env, "PORT": str(port)},
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/healthz"
            wait_until(lambda u=url: get(u, POD_HOST)[0] == 200, 30, role, proc)
            ports[role] = port
        yield ports, tmp / "static"
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.parametrize("role", ["web", "ws"])
def test_production_processes_answer_probes_by_pod_ip(production_servers, role):
    ports, _ = production_servers
    base = f"http://127.0.0.1:{ports[role]}"
    for path in ("/healthz", "/readyz", "/metrics"):
        status, _, body = get(base + path, POD_HOST)
        assert status == 200, (role, path, body[:200])
    assert b"chat_dependency_up" in get(base + "/metrics", POD_HOST)[2]
    assert get(base + "/chat/", POD_HOST)[0] == 400
    assert get(base + "/chat/", "chat.example.com")[0] == 200


def test_web_serves_its_own_hashed_static_files(production_servers):
    """nginx falls back to the web tier for assets it lacks (a page of another release)."""
    ports, static_root = production_servers
    (hashed,) = (static_root / "chat").glob("room.*.js")
    url = f"http://127.0.0.1:{ports['web']}/static/chat/{hashed.name}"
    status, headers, body = get(url, "chat.example.com")
    assert status == 200 and body == hashed.read_bytes()
    assert "immutable" in headers["Cache-Control"]
    assert (
        get(
            f"http://127.0.0.1:{ports['web']}/static/chat/room.0123456789ab.js", "chat.example.com"
        )[0]
        == 404
    )


@pytest.mark.django_db(transaction=True)
def test_daphne_refuses_frames_over_the_app_limit_before_buffering_them(production_servers):
    ports, _ = production_servers
    Room.objects.get_or_create(name="lobby")

    async def scenario() -> int | None:
        async with websockets.connect(
            f"ws://127.0.0.1:{ports['ws']}/ws/chat/lobby/",
            additional_headers={"Origin": "https://chat.example.com"},
        ) as conn:
            assert json.loads(await conn.recv())["type"] == "history"
            await conn.send("x" * (MAX_FRAME_BYTES + 1))
            try:
                while True:
                    await asyncio.wait_for(conn.recv(), 5)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code if closed.rcvd else None

    assert asyncio.run(scenario()) == 1009
