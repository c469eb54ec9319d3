"""Calling the async services from synchronous code (WSGI views, management commands)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from asgiref.sync import async_to_sync

from . import redis_client

P = ParamSpec("P")
T = TypeVar("T")


def call(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run `fn` to completion from sync code.

    Under WSGI each call gets a fresh event loop; a Redis client opened on it is closed
    here rather than leaked. Under daphne the call runs on the server's own loop, whose
    client stays open.
    """

    async def runner() -> T:
        fresh = asyncio.get_running_loop() not in redis_client._clients
        try:
            return await fn(*args, **kwargs)
        finally:
            if fresh:
                await redis_client.close_redis()

    return async_to_sync(runner)()
