"""The event loop's PostgreSQL pool (chat/pg_client.py) and the one close of a loop's
resources (chat/runtime.py), on the test PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection, connections

from chat import metrics, pg_client, redis_client, runtime
from chat.services import fanout, presence

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def pool(settings, monkeypatch):
    """Persistent connections on, as in production (the test settings turn them off);
    the loop's resources closed afterwards, so that the test database can be dropped."""
    monkeypatch.setitem(settings.DATABASES["default"], "CONN_MAX_AGE", 60)
    settings.CHAT_PG_POOL_MIN_SIZE = 1
    settings.CHAT_PG_POOL_MAX_SIZE = 3
    assert pg_client.enabled()
    yield
    await runtime.close_loop()
    await sync_to_async(connections.close_all)()


async def _pid() -> int:
    return (await pg_client.fetchone("SELECT pg_backend_pid()", []))[0]


async def _sleeping_pid(seconds: float) -> int:
    return (await pg_client.fetchone("SELECT pg_backend_pid() FROM pg_sleep(%s)", [seconds]))[0]


def _alive(pids: set[int]) -> set[int]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", [list(pids)])
        found = {row[0] for row in cursor.fetchall()}
    connection.close()
    return found


def _terminate(pids: set[int]) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(p) FROM unnest(%s::int[]) p", [list(pids)])
    connection.close()


async def test_concurrent_statements_run_side_by_side(pool):
    """No lock serialises the loop's statements: three sleeps take the time of one."""
    started = time.monotonic()
    pids = await asyncio.gather(*(_sleeping_pid(0.6) for _ in range(3)))
    assert time.monotonic() - started < 1.5
    assert len(set(pids)) == 3


async def test_a_pool_at_its_bound_fails_clearly_after_its_timeout(pool, settings):
    """Every connection busy: the next statement waits CHAT_PG_POOL_TIMEOUT, then fails
    as Django's OperationalError (the consumers' `unavailable`), rather than hanging."""
    settings.CHAT_PG_POOL_MAX_SIZE = 1
    settings.CHAT_PG_POOL_TIMEOUT = 0.3
    timeouts = metrics.PG_POOL_TIMEOUTS._value.get()
    await _pid()  # the pool is made, with these bounds
    busy = asyncio.ensure_future(_sleeping_pid(2))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(OperationalError, match="couldn't get a connection"):
        await _pid()
    assert 0.25 < time.monotonic() - started < 1.5
    assert metrics.PG_POOL_TIMEOUTS._value.get() == timeouts + 1
    await busy  # the statement that held the connection was not disturbed
    await _pid()  # and the connection serves the next one


async def test_waiting_statements_are_served_in_arrival_order(pool, settings):
    """A storm of statements on a full pool is served first come, first served, each
    within the timeout it would get alone: waiting must not cost a statement its place
    (a resume storm once saw the oldest waiters refused while newer ones ran)."""
    settings.CHAT_PG_POOL_MAX_SIZE = 1
    settings.CHAT_PG_POOL_TIMEOUT = 5.0
    await _pid()
    served: list[int] = []

    async def statement(i: int) -> None:
        await pg_client.fetchone("SELECT pg_sleep(0.04)", [])
        served.append(i)

    waiting = []
    for i in range(20):  # 0.8 s of work: longer than the pool's watch step
        waiting.append(asyncio.ensure_future(statement(i)))
        await asyncio.sleep(0.002)
    await asyncio.gather(*waiting)
    assert served == list(range(20))


async def test_a_cancelled_wait_gives_up_its_place_and_loses_no_connection(pool, settings):
    """A handshake cancelled while its statement waits (daphne's timeout, a client gone)
    leaves the pool whole: the next statement gets the connection."""
    settings.CHAT_PG_POOL_MAX_SIZE = 1
    settings.CHAT_PG_POOL_TIMEOUT = 5.0
    await _pid()
    busy = asyncio.ensure_future(_sleeping_pid(0.3))
    await asyncio.sleep(0.05)
    cancelled = [asyncio.ensure_future(_pid()) for _ in range(5)]
    await asyncio.sleep(0.05)
    for request in cancelled:
        request.cancel()
    await asyncio.gather(*cancelled, return_exceptions=True)
    await busy
    assert await asyncio.wait_for(_pid(), 1.0)
    assert pg_client.stats()["pool_size"] == 1


async def test_while_postgres_is_unreachable_statements_fail_fast_then_recover(
    pool, settings, monkeypatch
):
    """A refused connection marks PostgreSQL down: statements are then refused after one
    quick probe, not the pool timeout (a WebSocket handshake must get `unavailable`, not
    time out into a 502), and the first statement after it answers again succeeds, on a
    fresh pool rather than one sitting out its retries' back-off."""
    from localstack.servers import free_port

    settings.CHAT_PG_POOL_TIMEOUT = 4.0
    real_port = settings.DATABASES["default"]["PORT"]
    monkeypatch.setitem(settings.DATABASES["default"], "PORT", str(free_port()))
    with pytest.raises(OperationalError):
        await _pid()  # the first one learns it: the whole pool timeout at most
    assert pg_client.reachability.failed_at is not None
    stale = runtime.current().pg_pool
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(OperationalError, match="PostgreSQL is unreachable"):
            await _pid()
        assert time.monotonic() - started < pg_client.PROBE_TIMEOUT + 1.0 < 4.0
    monkeypatch.setitem(settings.DATABASES["default"], "PORT", real_port)  # back
    assert isinstance(await _pid(), int)
    assert pg_client.reachability.failed_at is None
    assert runtime.current().pg_pool is not stale


async def test_terminated_connections_are_replaced(pool, monkeypatch):
    """A restart or failover cuts every pooled connection: idle ones are checked before
    use, so the next statements succeed on new connections."""
    monkeypatch.setattr(pg_client, "CHECK_AFTER_IDLE", 0.0)
    old = set(await asyncio.gather(*(_sleeping_pid(0.3) for _ in range(3))))
    assert len(old) == 3
    await sync_to_async(_terminate)(old)
    new = set(await asyncio.gather(*(_pid() for _ in range(3))))
    assert not new & old
    assert not await sync_to_async(_alive)(old)


async def test_a_statement_right_after_a_restart_does_not_meet_a_dead_connection(pool):
    """Connections the server closed moments ago (a quick restart) are found before use,
    without the round-trip check (they idled less than CHECK_AFTER_IDLE): the next
    statements run on new connections instead of failing as `unavailable`."""
    old = set(await asyncio.gather(*(_sleeping_pid(0.3) for _ in range(3))))
    await sync_to_async(_terminate)(old)
    await asyncio.sleep(0.1)  # the server's goodbye reaches the idle sockets
    new = set(await asyncio.gather(*(_pid() for _ in range(3))))
    assert not new & old


async def test_the_pool_metrics_read_its_stats(pool, settings):
    from prometheus_client import REGISTRY

    settings.CHAT_PG_POOL_MIN_SIZE = 2
    await asyncio.gather(_pid(), _pid())

    def value(name: str) -> float:
        return REGISTRY.get_sample_value(name)

    assert value("chat_pg_pool_connections") >= 2
    assert value("chat_pg_pool_idle_connections") >= 1
    assert value("chat_pg_pool_waiting") == 0


async def test_close_loop_ends_the_loops_connections_and_stops_its_services(pool):
    """One close: PostgreSQL and Redis no longer see the loop's connections, and the next
    use on the loop makes new ones."""
    pids = set(await asyncio.gather(*(_sleeping_pid(0.2) for _ in range(2))))
    redis = redis_client.get_redis()
    redis_id = await redis.client_id()
    fanout.hub()
    presence.tracker()
    assert set(runtime.current().held()) == {"tracker", "redis", "pg_pool", "hub"}
    assert runtime.active()

    closed = await runtime.close_loop()

    assert closed == ["tracker", "redis", "pg_pool", "hub"]
    assert not runtime.active()
    assert not await sync_to_async(_alive)(pids)
    probe = redis_client.get_redis()  # a new client
    assert probe is not redis
    listed = await probe.client_list()
    assert redis_id not in {int(c["id"]) for c in listed}
    assert await _pid() not in pids


def test_a_ws_process_closes_its_loops_clients_when_it_shuts_down(tmp_path, make_user):
    """SIGTERM: after the drain, daphne's loop closes its pool, Redis client, hub and
    tracker (realtime/daphne_server.py) before the reactor stops, and says so."""
    from accounts.models import ApiToken

    from .test_processes import Client, service_env, start_ws

    token = ApiToken.issue(make_user("alice"))[1]
    env = service_env(
        "config.settings.local",
        CONN_MAX_AGE="60",
        CHAT_DRAIN_SPREAD="0",
        LOG_LEVEL="INFO",
    )
    proc, port = start_ws(tmp_path, "ws-shutdown", env)
    try:

        async def chat() -> None:
            alice = await Client.open(port, "lobby", token)
            await alice.send({"type": "chat_message", "message": "stored on the loop's pool"})
            assert (await alice.recv_type("chat_message"))["message"].startswith("stored")
            await alice.conn.close()

        asyncio.run(chat())
    finally:
        code = proc.stop()
    log = proc.tail(200)
    assert code == 0, log
    assert "closed the event loop's clients: tracker, redis, pg_pool, hub" in log, log
    assert log.index("closed the event loop's clients") < log.index("ws stopped"), log
