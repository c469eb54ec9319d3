#!/usr/bin/env python
"""One launcher for every process role, used by `make run`, `make stack`, the Dockerfile,
compose and Kubernetes alike, so each role starts the same way everywhere.

    entrypoint.py web              gunicorn (HTTP) with config/gunicorn.py
    entrypoint.py ws               daphne (WebSocket + HTTP) with drain on SIGTERM
    entrypoint.py migrate          apply database migrations (under a PostgreSQL advisory lock)
    entrypoint.py wait-migrations  wait until migrations are applied (init container of web, ws)
    entrypoint.py collectstatic    collect static files into STATIC_ROOT
    entrypoint.py manage ARGS…     any manage.py command
    entrypoint.py run              local all-in-one: migrate, demo users, one daphne

Settings come from the environment (DJANGO_SETTINGS_MODULE defaults to production;
`run` defaults to local). Server roles exec or run in this process so signals reach them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parent
ROLES = ("web", "ws", "migrate", "wait-migrations", "collectstatic", "manage", "run")


def _manage(*args: str) -> None:
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *args])


def web(args: list[str]) -> None:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    argv = [
        str(gunicorn),
        "--config",
        str(APP_DIR / "config" / "gunicorn.py"),
        *args,
        "config.wsgi:application",
    ]
    os.execv(argv[0], argv)


def ws(args: list[str]) -> None:
    from config import wsserver

    wsserver.main(args)


def run(args: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    _manage("migrate", "--noinput", "-v", "1")
    _manage("seed_demo")
    port = os.environ.get("PORT", "8000")
    print(f"Chat on http://127.0.0.1:{port}/chat/  (Ctrl-C stops)", flush=True)
    ws(args)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ROLES:
        sys.exit(f"usage: entrypoint.py {{{','.join(ROLES)}}} [args…]")
    role, args = argv[0], argv[1:]
    sys.path.insert(0, str(APP_DIR))
    os.chdir(APP_DIR)
    os.environ.setdefault("CHAT_ROLE", role if role in ("web", "ws") else "job")
    if role == "run":
        run(args)
        return
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    if role == "web":
        web(args)
    elif role == "ws":
        ws(args)
    elif role == "migrate":
        _manage("migrate", "--noinput", *args)
    elif role == "wait-migrations":
        _manage("wait_migrations", *args)
    elif role == "collectstatic":
        _manage("collectstatic", "--noinput", *args)
    else:
        _manage(*args)


if __name__ == "__main__":
    main(sys.argv[1:])
