"""A pool of async PostgreSQL connections per event loop, for the hot path's statements.

Storing a room message through the ORM costs a hop to the one database thread
(database_sync_to_async: a future, a thread switch and a wake-up of the loop) and, with
CONN_HEALTH_CHECKS, a `SELECT 1` round trip before the statement: on a busy replica
that was more than the insert itself (docs/benchmarks.md). The insert is one plain SQL
statement already (services/messages/store.py), so a long-lived loop (daphne's) runs
it here, on connections of its own opened with Django's own parameters.

The pool (psycopg_pool, kept with the loop's other resources by chat/runtime.py) holds
CHAT_PG_POOL_MIN_SIZE to CHAT_PG_POOL_MAX_SIZE connections, so concurrent statements run
side by side; one that finds them all busy waits at most CHAT_PG_POOL_TIMEOUT seconds,
then fails as Django's OperationalError (the consumers' `unavailable`). What Django's
persistent connections do is kept: a connection is replaced once older than CONN_MAX_AGE,
after any error that broke it, and checked first when it has been idle for a while
(which is when a failover or restart would have cut it), not before every statement.
"""

from __future__ import annotations

import asyncio
import contextvars
import select
import time
import weakref
from collections.abc import Sequence

import psycopg
from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from . import metrics, runtime

# Idle longer than this, a connection is checked before it is used again.
CHECK_AFTER_IDLE = 5.0
# How long the pool keeps trying to open a connection, backing off (1 s, then 2 s…),
# before it gives up on that attempt; the next statement that finds no connection starts
# a new one at once. After an outage the pool is replaced anyway (PROBE_TIMEOUT, below).
RECONNECT_SECONDS = 2.0

# While the last attempt to open a connection failed, a statement first tries to open one
# itself, for at most this long (and at most one such probe runs at a time per loop): if
# PostgreSQL is still down the statement is refused at once (a WebSocket handshake gets
# `unavailable`, not a 502 after daphne's handshake timeout), and once it answers again
# the pool is replaced by a fresh one, which does not sit out its retries' back-off.
PROBE_TIMEOUT = 1.0
# While a statement waits for a connection, it checks this often whether the pool's
# attempts found PostgreSQL gone.
WAIT_STEP = 0.25

# Set by chat.sync for a one-off event loop (a WSGI view, a command): opening a
# connection for one statement would cost more than Django's persistent one.
one_off_loop: contextvars.ContextVar[bool] = contextvars.ContextVar("one_off_loop", default=False)

# When each pooled connection was opened or last used (the pool's `check` reads it).
_last_used: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = weakref.WeakKeyDictionary()


class _Reachability:
    """When an attempt to open a connection last failed; None once one has succeeded."""

    failed_at: float | None = None


reachability = _Reachability()


class _TrackedConnection(psycopg.AsyncConnection):
    """Notes whether PostgreSQL answers, for the pool's attempts and the probes alike."""

    @classmethod
    async def connect(cls, *args, **kwargs):
        try:
            conn = await super().connect(*args, **kwargs)
        except psycopg.OperationalError:
            reachability.failed_at = time.monotonic()
            raise
        reachability.failed_at = None
        return conn


async def _probe() -> bool:
    """Open and close one connection outside the pool: does PostgreSQL answer now?"""
    try:
        conn = await _TrackedConnection.connect(
            **{**_connect_kwargs(), "connect_timeout": max(1, round(PROBE_TIMEOUT))}
        )
    except psycopg.Error:
        return False
    await conn.close()
    return True


async def _after_outage(resources: runtime.Resources) -> None:
    """PostgreSQL was unreachable: refuse now if it still is; if it is back, start a
    fresh pool (the old one closes in the background, its retries abandoned)."""
    stale = resources.pg_pool
    probing = resources.pg_probe
    if probing is None or probing.done():
        probing = resources.pg_probe = asyncio.ensure_future(_probe())
    if not await asyncio.shield(probing):
        raise psycopg.OperationalError(
            "PostgreSQL is unreachable: the last attempt to connect failed."
        )
    # Only the pool from before the probe: statements that awaited the same probe must
    # not close the fresh pool the first of them made.
    if stale is None or resources.pg_pool is not stale:
        return
    old, resources.pg_pool = stale, None
    if not old.closed:
        resources.pg_closing = asyncio.ensure_future(old.close(timeout=runtime.POOL_CLOSE_SECONDS))


def enabled() -> bool:
    """Whether this loop's statements go through here (else through the ORM's thread)."""
    db = settings.DATABASES["default"]
    return (
        db["ENGINE"] == "django.db.backends.postgresql"
        and db.get("CONN_MAX_AGE") != 0
        and "assume_role" not in db.get("OPTIONS", {})
        and not one_off_loop.get()
    )


def _connect_kwargs() -> dict:
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)  # Django's sync cursor class
    return {**params, "autocommit": True}


async def _opened(conn: psycopg.AsyncConnection) -> None:
    _last_used[conn] = time.monotonic()


async def _check(conn: psycopg.AsyncConnection) -> None:
    """The pool's check before it hands a connection out: a round trip only after idling."""
    if time.monotonic() - _last_used.get(conn, 0.0) > CHECK_AFTER_IDLE:
        await AsyncConnectionPool.check_connection(conn)


def _new_pool() -> AsyncConnectionPool:
    max_age = settings.DATABASES["default"].get("CONN_MAX_AGE")
    return AsyncConnectionPool(
        kwargs=_connect_kwargs,
        connection_class=_TrackedConnection,
        min_size=settings.CHAT_PG_POOL_MIN_SIZE,
        max_size=settings.CHAT_PG_POOL_MAX_SIZE,
        timeout=settings.CHAT_PG_POOL_TIMEOUT,
        max_idle=settings.CHAT_PG_POOL_MAX_IDLE,
        max_lifetime=float("inf") if max_age is None else float(max_age),
        reconnect_timeout=RECONNECT_SECONDS,
        configure=_opened,
        check=_check,
        name="chat-loop",
        open=False,
    )


async def _pool() -> AsyncConnectionPool:
    resources = runtime.current()
    pool = resources.pg_pool
    if pool is None:
        pool = resources.pg_pool = _new_pool()
    if pool.closed:
        await pool.open()  # once; its connections are opened in the background
    return pool


async def _getconn() -> tuple[AsyncConnectionPool, psycopg.AsyncConnection]:
    """A connection within CHAT_PG_POOL_TIMEOUT, in the pool's queue order: if the
    pool's own attempts find PostgreSQL gone meanwhile, the wait ends with the outage's
    quick refusal rather than the whole timeout; a pool replaced meanwhile is swapped for
    the fresh one.

    The wait is one request to the pool, watched in steps, not a request per step: a
    request that times out loses its place in the queue, so under a reconnect storm the
    stepwise waiters went to the back again and again and were refused while newer ones
    were served.
    """
    deadline = time.monotonic() + settings.CHAT_PG_POOL_TIMEOUT
    replaced = False
    while True:
        if reachability.failed_at is not None:
            await _after_outage(runtime.current())
        pool = await _pool()
        request = asyncio.ensure_future(pool.getconn(timeout=max(0.0, deadline - time.monotonic())))
        try:
            while not request.done() and reachability.failed_at is None:
                await asyncio.wait({request}, timeout=WAIT_STEP)
        finally:
            if not request.done():  # cancelled, or PostgreSQL found gone
                _abandon(pool, request)
        if not request.done():
            continue
        try:
            conn = request.result()
        except PoolTimeout:
            metrics.PG_POOL_TIMEOUTS.inc()
            raise
        except PoolClosed:
            if replaced:
                raise
            replaced = True  # closed by _after_outage for a fresh one: take that
            continue
        if not _closed_by_server(conn):
            return pool, conn
        await conn.close()
        await pool.putconn(conn)  # dropped, and replaced in the background
        # Its siblings are likely as dead (a restart): the pool checks them meanwhile.
        _check_soon(pool)


def _closed_by_server(conn: psycopg.AsyncConnection) -> bool:
    """Whether the server closed this idle connection (a restart, a failover,
    pg_terminate_backend): its FATAL notice or the EOF waits unread in the socket, where
    an idle connection has nothing. A poll, no round trip, so it runs on every checkout;
    the pool's own check (a round trip) runs only after CHECK_AFTER_IDLE, so a statement
    right after a quick restart would otherwise meet the dead connection and fail."""
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    return bool(poller.poll(0))


# Pools being checked after a dead connection was found (a task needs a reference).
_checking: dict[AsyncConnectionPool, asyncio.Future] = {}


def _check_soon(pool: AsyncConnectionPool) -> None:
    if pool in _checking or pool.closed:
        return
    task = _checking[pool] = asyncio.ensure_future(pool.check())
    task.add_done_callback(lambda _: _checking.pop(pool, None))


# Connections on their way back from abandoned requests (a task needs a reference).
_returning: set[asyncio.Future] = set()


def _abandon(pool: AsyncConnectionPool, request: asyncio.Future) -> None:
    """Cancel a request to the pool; a connection it was given in the race goes back."""

    def give_back(done: asyncio.Future) -> None:
        if not done.cancelled() and done.exception() is None:
            task = asyncio.ensure_future(pool.putconn(done.result()))
            _returning.add(task)
            task.add_done_callback(_returning.discard)

    request.add_done_callback(give_back)
    request.cancel()


async def fetchone(sql: str, params: Sequence[object]) -> tuple | None:
    """Run one statement (its own transaction) on a pooled connection; its first row.

    Errors come out as Django's database exceptions, so callers handle them as they
    handle the ORM's. A caller cancelled mid-statement (daphne killing an application
    at shutdown) cancels it in the server too (psycopg waits for that, so the connection
    goes back to the pool usable): the statement commits whole or not at all.
    """
    with connections["default"].wrap_database_errors:
        pool, conn = await _getconn()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(sql, params)
                return await cursor.fetchone()
        finally:
            _last_used[conn] = time.monotonic()
            # A connection the statement broke is replaced by the pool.
            await pool.putconn(conn)


def columns(model, alias: str = "") -> str:
    """The SELECT list of `model`'s concrete fields, for a row `instance` turns back."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{f.column}"' for f in model._meta.concrete_fields)


def instance(model, row: Sequence[object]):
    """A model instance from a row selected with `columns(model)`, as the ORM builds it."""
    names = [f.attname for f in model._meta.concrete_fields]
    return model.from_db(connections["default"].alias, names, list(row))


def stats() -> dict[str, int]:
    """psycopg_pool's get_stats() of every loop's pool, summed (for the metrics)."""
    total: dict[str, int] = {}
    for resources in runtime.every_loop():
        pool = resources.pg_pool
        if pool is not None and not pool.closed:
            for key, value in pool.get_stats().items():
                total[key] = total.get(key, 0) + value
    return total


metrics.PG_POOL_CONNECTIONS.set_function(lambda: stats().get("pool_size", 0))
metrics.PG_POOL_IDLE.set_function(lambda: stats().get("pool_available", 0))
metrics.PG_POOL_WAITING.set_function(lambda: stats().get("requests_waiting", 0))


async def close() -> None:
    """Close this loop's pool (runtime.close_loop closes it with the rest)."""
    resources = runtime.current()
    pool, resources.pg_pool = resources.pg_pool, None
    if pool is not None:
        await pool.close()
