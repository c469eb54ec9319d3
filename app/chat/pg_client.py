"""An async PostgreSQL connection per event loop, for the statement on the hot path.

Storing a room message through the ORM costs a hop to the one database thread
(database_sync_to_async: a future, a thread switch and a wake-up of the loop) and, with
CONN_HEALTH_CHECKS, a `SELECT 1` round trip before the statement: on a busy replica
that was more than the insert itself (docs/benchmarks.md). The insert is one plain SQL
statement already (services/messages.py), so a long-lived loop (daphne's) runs it here,
on a connection of its own opened with Django's own connection parameters.

What Django's persistent connections do is kept: a connection is replaced once older
than CONN_MAX_AGE, after any error that broke it, and checked with `SELECT 1` first
when it has been idle for a while (which is when a failover or restart would have cut
it), not before every statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import weakref
from collections.abc import Sequence

import psycopg
from django.conf import settings
from django.db import connections

# Idle longer than this, a connection is checked before it is used again.
CHECK_AFTER_IDLE = 5.0

# Set by chat.sync for a one-off event loop (a WSGI view, a command): opening a
# connection for one statement would cost more than Django's persistent one.
one_off_loop: contextvars.ContextVar[bool] = contextvars.ContextVar("one_off_loop", default=False)


def enabled() -> bool:
    """Whether this loop's statements go through here (else through the ORM's thread)."""
    db = settings.DATABASES["default"]
    return (
        db["ENGINE"] == "django.db.backends.postgresql"
        and db.get("CONN_MAX_AGE") != 0
        and "assume_role" not in db.get("OPTIONS", {})
        and not one_off_loop.get()
    )


class _Holder:
    def __init__(self) -> None:
        self.conn: psycopg.AsyncConnection | None = None
        self.opened = self.used = 0.0
        self.lock = asyncio.Lock()

    async def get(self) -> psycopg.AsyncConnection:
        async with self.lock:
            now = time.monotonic()
            conn = self.conn
            max_age = settings.DATABASES["default"].get("CONN_MAX_AGE")
            if conn is not None and (conn.closed or conn.broken):
                await self.close()
            elif conn is not None and max_age is not None and now - self.opened > max_age:
                # Other callers may have a statement running on it: let those finish
                # (psycopg holds the connection's lock while one runs), then close.
                async with conn.lock:
                    await self.close()
            elif conn is not None and now - self.used > CHECK_AFTER_IDLE:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error:
                    await self.close()
            if self.conn is None:
                params = connections["default"].get_connection_params()
                params.pop("cursor_factory", None)  # Django's sync cursor class
                self.conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
                self.opened = now
            self.used = now
            return self.conn

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


_holders: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Holder] = (
    weakref.WeakKeyDictionary()
)


def _holder() -> _Holder:
    loop = asyncio.get_running_loop()
    holder = _holders.get(loop)
    if holder is None:
        holder = _holders[loop] = _Holder()
    return holder


async def fetchone(sql: str, params: Sequence[object]) -> tuple | None:
    """Run one statement (its own transaction) and return its first row.

    Errors come out as Django's database exceptions, so callers handle them as they
    handle the ORM's. A caller cancelled mid-statement (daphne killing an application
    at shutdown) cancels it in the server too (psycopg waits for that, so the connection
    stays usable): the statement commits whole or not at all. Not shielded in a task of
    its own: that costs a task and a loop pass on every statement, for a case that only
    arises at shutdown.
    """
    with connections["default"].wrap_database_errors:
        conn = await _holder().get()
        async with conn.cursor() as cursor:
            await cursor.execute(sql, params)
            return await cursor.fetchone()


def columns(model, alias: str = "") -> str:
    """The SELECT list of `model`'s concrete fields, for a row `instance` turns back."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{f.column}"' for f in model._meta.concrete_fields)


def instance(model, row: Sequence[object]):
    """A model instance from a row selected with `columns(model)`, as the ORM builds it."""
    names = [f.attname for f in model._meta.concrete_fields]
    return model.from_db(connections["default"].alias, names, list(row))


async def close() -> None:
    """Close this loop's connection (tests, one-off loops)."""
    holder = _holders.pop(asyncio.get_running_loop(), None)
    if holder is not None:
        await holder.close()
