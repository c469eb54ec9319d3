"""Calling the async services from synchronous code (WSGI views, management commands)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import async_to_sync

from . import pg_client, runtime

P = ParamSpec("P")
T = TypeVar("T")


def call(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` to completion from sync code.

    Under WSGI each call gets a fresh event loop; the clients opened on it are closed
    here (chat/runtime.py) rather than leaked, and statements go through Django's
    persistent connection (chat.pg_client would open a pool for a single statement).
    Under daphne the call runs on the server's own loop, whose clients stay open.
    """

    async def runner() -> T:
        fresh = not runtime.active()
        # Reset on the way out: async_to_sync copies context changes back to the caller.
        token = pg_client.one_off_loop.set(fresh)
        try:
            return await fn(*args, **kwargs)
        finally:
            pg_client.one_off_loop.reset(token)
            if fresh:
                await runtime.close_loop()

    return async_to_sync(runner)()
