"""Hand out the `username token` lines of `manage.py create_users --tokens-out`.

Each Locust process takes its own slice (by worker index when distributed) so senders
are distinct users and stay within their own rate limit. When a slice runs out the
pool wraps around with a warning: two connections of one user are legal (two tabs), but
presence then counts them once.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

from locust.env import Environment
from locust.runners import WorkerRunner

from . import options

log = logging.getLogger(__name__)


class TokenPool:
    def __init__(self) -> None:
        self._pairs: list[tuple[str, str]] | None = None
        self._next = itertools.count()

    def _load(self, environment: Environment) -> list[tuple[str, str]]:
        path = options.get(environment).tokens
        if not path:
            raise RuntimeError(
                "No tokens: set LOCUST_TOKENS (or --tokens) to a file written by "
                "`manage.py create_users --count N --tokens-out FILE`."
            )
        pairs = []
        for line in Path(path).read_text().splitlines():
            if line.strip():
                username, token = line.split()
                pairs.append((username, token))
        if not pairs:
            raise RuntimeError(f"{path} holds no 'username token' lines.")
        runner = environment.runner
        workers = int(getattr(options.get(environment), "expect_workers", 1) or 1)
        if isinstance(runner, WorkerRunner) and workers > 1 and len(pairs) >= workers:
            pairs = pairs[runner.worker_index % workers :: workers]
        return pairs

    def take(self, environment: Environment) -> tuple[str, str]:
        if self._pairs is None:
            self._pairs = self._load(environment)
        n = next(self._next)
        if n == len(self._pairs):
            log.warning(
                "%d tokens for more users: reusing them (one user, several connections)",
                len(self._pairs),
            )
        return self._pairs[n % len(self._pairs)]


pool = TokenPool()
