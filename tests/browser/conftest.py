"""Real Chromium (Debian's `chromium`, driven by Playwright) against the real topology.

One stack per session (tools/localstack/stack.py): nginx, gunicorn, two daphne replicas,
Redis and PostgreSQL, on free ports. `people(name, replica=i)` opens a logged-in browser
context pinned to replica i (see harness.py); `replica=None` goes through nginx.

The test process itself never touches a database: users, rooms and messages are made
with `manage.py` jobs against the stack, everything else goes through the browser.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from localstack.servers import ServerError

from .harness import CHROMIUM_ARGS, TIMEOUT_MS, ChatStack, chromium_path, new_stack, open_person

USERS = {"alice": False, "bob": False, "carol": False, "dave": False, "sam": True}

expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
def chat_stack() -> Iterator[ChatStack]:
    with new_stack() as stack:
        chat = ChatStack(stack)
        chat.seed(USERS, {"lobby": False, "ops": True})
        yield chat


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    try:
        executable = chromium_path()
    except ServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def people(browser: Browser, chat_stack: ChatStack) -> Iterator:
    """people(name, replica=i | None, viewport=…): a logged-in Person; None is anonymous."""
    opened = []

    def login(name: str | None, replica: int | None = None, viewport: dict | None = None):
        person = open_person(browser, chat_stack, name, replica, viewport)
        opened.append(person)
        return person

    yield login
    for person in opened:
        person.context.close()
    for person in opened:
        assert person.errors == [], f"JavaScript errors on {person.name}'s page: {person.errors}"
        assert person.dialogs == [], f"dialogs opened on {person.name}'s page: {person.dialogs}"
