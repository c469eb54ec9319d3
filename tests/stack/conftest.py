"""One launched stack for the whole suite: nginx, gunicorn, three daphne replicas, Redis,
PostgreSQL, all from tools/localstack/stack.py on free ports in a temp dir.

Tests that break something (a replica, Redis, PostgreSQL) leave it to the autouse
`healthy` fixture to bring it back, so each test starts from a whole stack.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtests.chatclient.aio import ChatClient, close_all
from localstack.servers import free_ports
from localstack.stack import Stack, http_get

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = 3
PRESENCE_TTL = 5.0
DRAIN_TIMEOUT = 8.0
DRAIN_SPREAD = 3.0
USERS = 16
PASSWORD = "stack-pass-7391"

STACK_ENV = {
    # Short presence TTL so a killed replica's ghosts go within the test's patience.
    "CHAT_PRESENCE_TTL": str(PRESENCE_TTL),
    "CHAT_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
    # Drains close their sockets over this many seconds (at most half the timeout).
    "CHAT_DRAIN_SPREAD": str(DRAIN_SPREAD),
    # The senders here go faster than a person; rate limits have their own core tests.
    "CHAT_RATE_LIMIT_PER_SECOND": "100",
    "CHAT_RATE_LIMIT_BURST": "200",
}


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    # The stack's own temp dir, not pytest's: another pytest starting meanwhile makes its
    # base dir private (0700), and nginx's workers and PostgreSQL run as other users.
    first = free_ports(REPLICAS + 2)
    with Stack(replicas=REPLICAS, port=first, base_port=first + 1, env=STACK_ENV) as running:
        try:
            yield running
        finally:
            keep_logs(running)
        leaked = secrets_in_logs(running, tokens_file=running.root / "tokens.txt")
        assert not leaked, f"secrets in logs: {leaked}"


def keep_logs(stack: Stack, name: str = "stack-logs") -> None:
    """Copy every log to .results/<name>/ (the stack's temp dir goes when it stops)."""
    out = ROOT / ".results" / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name, path in stack.logs().items():
        shutil.copyfile(path, out / f"{name}.log")


def secrets_in_logs(stack: Stack, tokens_file: Path) -> list[str]:
    """Log files that contain SECRET_KEY, the shared password or any API token."""
    secrets = [stack.env["SECRET_KEY"], PASSWORD]
    if tokens_file.exists():
        secrets += [line.split()[1] for line in tokens_file.read_text().splitlines()]
    found = []
    for name, path in stack.logs().items():
        text = path.read_text(errors="replace")
        found += [f"{name}: {s[:4]}…" for s in secrets if s in text]
    return found


@pytest.fixture(scope="session")
def tokens(stack: Stack) -> dict[str, str]:
    """user1…userN with API tokens (and one shared password), made by create_users."""
    out = stack.root / "tokens.txt"
    stack.manage(
        "create_users",
        "--count",
        str(USERS),
        "--prefix",
        "user",
        "--password",
        PASSWORD,
        "--tokens-out",
        str(out),
    )
    return dict(line.split() for line in out.read_text().splitlines())


@pytest.fixture(autouse=True)
def healthy(request):
    """Each stack test starts (and leaves the next one) with every part running."""
    if "stack" not in request.fixturenames:
        yield
        return
    stack = request.getfixturevalue("stack")
    stack.ensure_running()
    yield
    stack.ensure_running()


@pytest.fixture
def room() -> str:
    """A fresh room per test, so histories and presence never mix."""
    return f"r-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def clients():
    """Open ChatClients through `clients.open(...)`; all closed after the test."""

    class Opened(list):
        async def open(self, url: str, token: str | None = None, **kw) -> ChatClient:
            client = ChatClient(url, token, **kw)
            self.append(client)
            return await client.connect()

    opened = Opened()
    yield opened
    await close_all(opened)


def metric(stack_url: str, name: str, **labels: str) -> float:
    """One sample of a process's /metrics (0 when the series does not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = http_get(stack_url + "/metrics")
    assert status == 200, body[:200]
    total = 0.0
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def log_lines(path: Path) -> list[str]:
    return [line for line in path.read_text(errors="replace").splitlines() if line.strip()]


HASHED_STATIC = re.compile(r'(?:href|src)="(/static/[^"]+\.[0-9a-f]{12}\.(?:css|js))"')
