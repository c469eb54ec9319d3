"""A throwaway PostgreSQL and Redis for each pytest process, before Django loads settings.

config.settings.test only reads DATABASE_URL and REDIS_URL; this plugin provides them.
pytest-django imports the settings in its own pytest_load_initial_conftests, and conftest
files load only after that, so the servers start from this plugin: `-p` in pyproject's
addopts registers it before the entry-point plugins, and its hook runs tryfirst. The URLs
go into os.environ so that the processes a test starts (daphne, gunicorn) share the
servers, which stop when the process exits. A DATABASE_URL already given is used as it is
and nothing starts; nor does anything under `-p no:django` (tests/containers).
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    if os.environ.get("DATABASE_URL") or not early_config.pluginmanager.has_plugin("django"):
        return
    options = early_config.known_args_namespace
    if getattr(options, "help", False) or getattr(options, "version", False):
        return

    from localstack.servers import ServerError, start_test_services

    try:
        os.environ.update(start_test_services())
    except ServerError as exc:
        raise pytest.UsageError(f"starting the test PostgreSQL and Redis: {exc}") from exc
