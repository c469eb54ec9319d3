"""Shared fixtures. Real PostgreSQL and Redis come from tests/plugins/services.py."""

from __future__ import annotations

import os

import pytest
import redis as redis_sync


@pytest.fixture(autouse=True)
def _clean_redis():
    """Every test starts with an empty Redis: presence, rate limits and layer groups."""
    url = os.environ.get("REDIS_URL")
    if not url:
        yield
        return
    client = redis_sync.Redis.from_url(url)
    client.flushall()
    yield
    client.flushall()
    client.close()
