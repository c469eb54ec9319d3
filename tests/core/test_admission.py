"""Admission control (chat/services/admission.py): joins in progress and sockets per
process, refused before any storage work — under a real daphne process with an HTTP 503
and Retry-After before the upgrade (realtime/ws_protocol.py's denial response), under the
test communicator (no such extension) with `overloaded` + retry_after and 1013 — and the
drain-spread setting's bound (the spread drain itself: tests/stack/test_drain_spread.py).

Limits are set relative to what the process already counts, so a slot another test left
(there should be none) cannot make these pass or fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.request

import pytest
import redis
import websockets
from django.db import OperationalError
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from accounts import auth
from accounts.models import ApiToken
from chat import consumers
from chat.models import Room
from chat.services import abuse, admission, rooms

from .conftest import recv
from .test_processes import manage_shell, service_env, start_ws

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


def refusals(reason: str) -> float:
    return REGISTRY.get_sample_value("chat_ws_admission_refusals_total", {"reason": reason}) or 0


def joins_in_progress() -> float:
    return REGISTRY.get_sample_value("chat_ws_joins_in_progress") or 0


@pytest.fixture
def held_history(monkeypatch):
    """Joins stop before their history until `release` is set: they stay in progress."""
    release = asyncio.Event()
    original = consumers.messages.history

    async def history(*args, **kwargs):
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(consumers.messages, "history", history)
    return release


def no_storage(monkeypatch) -> None:
    """Make connect's Redis (socket slots) and database (room) steps fail the test."""

    def touched(*args, **kwargs):
        raise AssertionError("admission control must refuse before any storage work")

    async def resolved(*args, **kwargs):
        raise AssertionError("admission control must refuse before the session look-up")

    monkeypatch.setattr(abuse, "admit_socket", touched)
    monkeypatch.setattr(rooms, "open_room", touched)
    # The auth middleware's look-ups: the gate stands ahead of them (chat/admission_gate.py).
    auth.token_cache.clear()
    monkeypatch.setattr(auth, "user_for_token", touched)
    monkeypatch.setattr(auth.ResilientAuthMiddleware, "resolve_scope", resolved)


async def until(check, timeout: float = 3.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met")


async def expect_overloaded(comm, retry_range: tuple[int, int]) -> dict:
    error = await recv(comm)
    assert error["type"] == "error" and error["code"] == "overloaded", error
    assert isinstance(error["retry_after"], int)
    assert retry_range[0] <= error["retry_after"] <= retry_range[1], error
    assert (await comm.receive_output(timeout=3)) == {"type": "websocket.close", "code": 1013}
    return error


async def test_joins_in_progress_are_capped_and_refused_before_any_storage_work(
    ws, alice, settings, monkeypatch, held_history
):
    gate = admission.gate()
    settings.CHAT_WS_MAX_HANDSHAKES = gate.joining + 1
    refused_before, joining_before = refusals("handshakes"), joins_in_progress()

    first = await ws.connect(user=alice, skip_greeting=False)  # accepted, held before history
    await until(lambda: joins_in_progress() == joining_before + 1)
    with monkeypatch.context() as patched:
        no_storage(patched)
        refused = await ws.connect("brand-new", user=alice, skip_greeting=False)
        await expect_overloaded(refused, admission.RETRY_AFTER["handshakes"])
    assert not await Room.objects.filter(name="brand-new").aexists(), "no room was created"
    assert refusals("handshakes") == refused_before + 1

    held_history.set()  # the first join ends: its greeting goes out
    assert (await recv(first))["type"] == "history"
    assert (await recv(first))["type"] == "user_list"
    assert joins_in_progress() == joining_before
    second = await ws.connect(user=alice, skip_greeting=False)  # a join slot is free again
    assert (await recv(second))["type"] == "history"


async def test_sockets_are_capped_and_a_disconnect_frees_its_slot(ws, alice, settings):
    gate = admission.gate()
    base = gate.connections
    settings.CHAT_WS_MAX_CONNECTIONS = base + 2
    refused_before = refusals("connections")
    first = await ws.connect(user=alice)
    await ws.connect(user=alice)
    assert gate.connections == base + 2
    refused = await ws.connect(user=alice, skip_greeting=False)
    await expect_overloaded(refused, admission.RETRY_AFTER["connections"])
    assert refusals("connections") == refused_before + 1
    ws.open.remove(refused)
    await refused.disconnect(timeout=3)
    assert gate.connections == base + 2, "a refused socket holds no slot"

    ws.open.remove(first)
    await first.disconnect(timeout=3)
    await until(lambda: gate.connections == base + 1)
    await ws.connect(user=alice)  # admitted again


async def test_a_failed_join_gives_its_slots_back(ws, alice, settings, monkeypatch):
    gate = admission.gate()
    joining, connections = gate.joining, gate.connections
    settings.CHAT_WS_MAX_HANDSHAKES = joining + 1
    settings.CHAT_WS_MAX_CONNECTIONS = connections + 1

    def database_down(*args, **kwargs):
        raise OperationalError("database down")

    with monkeypatch.context() as patched:
        patched.setattr(rooms, "open_room", database_down)
        failed = await ws.connect(user=alice, skip_greeting=False)
        error = await recv(failed)
        assert error["code"] == "unavailable", error
        assert (await failed.receive_output(timeout=3))["code"] == 1013
    assert gate.joining == joining, "the join is over once refused"
    ws.open.remove(failed)
    await failed.disconnect(timeout=3)
    await until(lambda: gate.connections == connections)
    await ws.connect(user=alice)  # both slots were given back


async def test_a_cancelled_consumer_gives_its_slots_back(ws, alice, held_history):
    gate = admission.gate()
    joining, connections = gate.joining, gate.connections
    comm = await ws.connect(user=alice, skip_greeting=False)
    await until(lambda: gate.joining == joining + 1)
    assert gate.connections == connections + 1
    ws.open.remove(comm)  # nothing left to close after this
    comm.future.cancel()  # as at shutdown: no disconnect runs, __call__'s finally does
    await asyncio.gather(comm.future, return_exceptions=True)
    assert (gate.joining, gate.connections) == (joining, connections)


def test_limits_off_admit_everything(settings):
    settings.CHAT_WS_MAX_HANDSHAKES = 0
    settings.CHAT_WS_MAX_CONNECTIONS = 0
    gate = admission.Gate()
    slots = [gate.admit() for _ in range(50)]
    assert (gate.joining, gate.connections) == (50, 50)
    for slot in slots:
        slot.release()
        slot.release()  # idempotent
    assert (gate.joining, gate.connections) == (0, 0)


def test_the_overloaded_error_is_a_503_with_retry_after():
    error = admission.Overloaded("handshakes", 3)
    assert error.status == 503
    assert error.as_frame()["retry_after"] == 3


def settings_of(**env: str) -> subprocess.CompletedProcess:
    code = "from django.conf import settings; print(settings.CHAT_DRAIN_SPREAD)"
    return manage_shell(code, DEBUG="1", **env)


def spread_of(**env: str) -> str:
    done = settings_of(**env)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1]


def test_drain_spread_must_fit_in_the_drain_timeout():
    refused = settings_of(CHAT_DRAIN_TIMEOUT="4", CHAT_DRAIN_SPREAD="3")
    assert refused.returncode != 0
    assert (
        "CHAT_DRAIN_SPREAD=3 must be between 0 and half of CHAT_DRAIN_TIMEOUT=4" in refused.stderr
    )
    assert spread_of(CHAT_DRAIN_TIMEOUT="4", CHAT_DRAIN_SPREAD="2") == "2.0"
    # Unset: 5 s, or half the drain timeout when that is shorter.
    assert spread_of(CHAT_DRAIN_TIMEOUT="20") == "5.0"
    assert spread_of(CHAT_DRAIN_TIMEOUT="3") == "1.5"


def test_presence_grace_must_outlast_the_drain_spread():
    refused = settings_of(CHAT_DRAIN_TIMEOUT="20", CHAT_PRESENCE_GRACE="4")
    assert refused.returncode != 0
    assert "CHAT_PRESENCE_GRACE=4 must be longer than CHAT_DRAIN_SPREAD=5" in refused.stderr
    assert spread_of(CHAT_DRAIN_TIMEOUT="20", CHAT_PRESENCE_GRACE="0") == "5.0"  # off: fine
    negative = settings_of(CHAT_PRESENCE_INTERVAL="-1")
    assert negative.returncode != 0 and "cannot be negative" in negative.stderr


def test_drain_batches_cover_every_socket_once_over_the_spread():
    code = (
        "import json; from realtime.daphne_server import drain_batches, retry_hint;"
        "print(json.dumps([drain_batches(1000, 5.0), drain_batches(3, 5.0),"
        " drain_batches(7, 0.0), [retry_hint(0.5) for _ in range(200)]]))"
    )
    done = manage_shell(code, DEBUG="1")
    assert done.returncode == 0, done.stderr
    many, few, unspread, hints = json.loads(done.stdout.splitlines()[-1])
    assert len(many) == 50  # a batch every 0.1 s
    assert [start for _, start, _ in many] == [end - 20 for _, _, end in many]
    assert many[0][:2] == [0, 0] and many[-1][2] == 1000 and many[-1][0] == pytest.approx(4.9)
    assert [round(delay, 2) for delay, _, _ in few] == [0, 1.67, 3.33]
    assert unspread == [[0, 0, 7]]
    millis = [int(h.removeprefix("retry_after_ms=")) for h in hints]
    assert all(0 <= m <= 500 for m in millis) and len(set(millis)) > 50


# --- under a real daphne process: refused before the upgrade -----------------------------


@pytest.fixture(scope="module")
def limited_ws(django_db_setup, django_db_blocker, tmp_path_factory):
    """A ws process on the test database and Redis that admits one join at a time and
    two sockets; its port."""
    tmp = tmp_path_factory.mktemp("limited")
    env = service_env(
        CHAT_WS_MAX_HANDSHAKES="1",
        CHAT_WS_MAX_CONNECTIONS="2",
    )
    proc, port = start_ws(tmp, "ws-limited", env)
    yield port
    proc.stop()


def process_metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def open_socket(port: int, token: str):
    """A joined socket (its greeting read), or InvalidStatus if the handshake is refused."""
    conn = await websockets.connect(
        f"ws://127.0.0.1:{port}/ws/chat/lobby/?v=2",
        additional_headers={"Authorization": f"Bearer {token}"},
        open_timeout=10,
    )
    assert json.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "history"
    assert json.loads(await asyncio.wait_for(conn.recv(), 10))["type"] == "user_list"
    return conn


async def refused(port: int, token: str) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as caught:
        await open_socket(port, token)
    return caught.value


def assert_overloaded_503(refusal: InvalidStatus, retry_range: tuple[int, int]) -> int:
    """The refusal is a 503 saying when to come back, with the HTTP API's error body."""
    response = refusal.response
    assert response.status_code == 503, response
    retry_after = int(response.headers["Retry-After"])
    assert retry_range[0] <= retry_after <= retry_range[1]
    assert response.headers["Content-Type"] == "application/json"
    body = json.loads(response.body)
    assert body == {
        "error": {
            "code": "overloaded",
            "message": f"This server is busy; try again in {retry_after} s.",
        }
    }
    return retry_after


@pytest.mark.django_db(transaction=True)
def test_a_join_past_the_handshake_limit_gets_503_with_retry_after_before_the_upgrade(
    limited_ws, make_user
):
    port = limited_ws
    token = ApiToken.issue(make_user("hanna"))[1]
    paused = redis.Redis.from_url(os.environ["REDIS_URL"])

    async def scenario():
        before = process_metric(port, "chat_ws_admission_refusals_total", reason="handshakes")
        # Redis holds the first join in progress (its socket slots are Redis work, after
        # the gate): the process is at its limit of one join.
        paused.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        try:
            first = asyncio.create_task(open_socket(port, token))
            for _ in range(100):
                if process_metric(port, "chat_ws_joins_in_progress") >= 1:
                    break
                await asyncio.sleep(0.02)
            else:
                raise AssertionError("the first join never started")
            assert_overloaded_503(await refused(port, token), admission.RETRY_AFTER["handshakes"])
        finally:
            paused.execute_command("CLIENT", "UNPAUSE")
        held = await first  # the first join completes once Redis answers
        after = process_metric(port, "chat_ws_admission_refusals_total", reason="handshakes")
        assert after == before + 1
        second = await open_socket(port, token)  # its turn: the join slot is free again
        await asyncio.gather(held.close(), second.close())

    asyncio.run(scenario())


@pytest.mark.django_db(transaction=True)
def test_a_socket_past_the_connection_limit_gets_503_and_its_retry_gets_in(limited_ws, make_user):
    port = limited_ws
    token = ApiToken.issue(make_user("ines"))[1]

    async def scenario():
        before = process_metric(port, "chat_ws_admission_refusals_total", reason="connections")
        held = [await open_socket(port, token), await open_socket(port, token)]
        assert_overloaded_503(await refused(port, token), admission.RETRY_AFTER["connections"])
        after = process_metric(port, "chat_ws_admission_refusals_total", reason="connections")
        assert after == before + 1
        await held.pop().close()
        # The slot is given back when the closed socket's consumer has ended, a moment
        # after the close: the retry gets in then.
        for _ in range(50):
            try:
                retried = await open_socket(port, token)
                break
            except InvalidStatus as refusal:
                assert_overloaded_503(refusal, admission.RETRY_AFTER["connections"])
                await asyncio.sleep(0.1)
        else:
            raise AssertionError("the socket's slot was never given back")
        await asyncio.gather(retried.close(), *(conn.close() for conn in held))

    asyncio.run(scenario())
