"""What the browser tests and the screenshot script share: a stack, Chromium, people.

A `Person` is one user in one browser context, pinned either to nginx or to one daphne
replica. Pinning works by opening the site on the replica's own port: the page opens
its WebSocket to `location.host`, so that replica is "its" server, and restarting the
replica is what the person lives through. Daphne serves the pages there as well; static
files, which only nginx serves in production, are fetched from nginx for such contexts.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field

from playwright.sync_api import Browser, BrowserContext, Page, expect

from localstack.servers import ServerError, free_ports
from localstack.stack import Stack

PASSWORD = "browser-pass-1234"
REPLICAS = 2
TIMEOUT_MS = 10_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]

# users: {name: is_staff}; rooms: {name: staff_only}
SEED = """
import json
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from chat.models import Room
spec = json.loads({spec!r})
User = get_user_model()
hashed = make_password(spec["password"])
for name, staff in spec["users"].items():
    User.objects.update_or_create(
        username=name, defaults={{"password": hashed, "is_staff": staff, "is_active": True}}
    )
for name, staff_only in spec["rooms"].items():
    Room.objects.update_or_create(name=name, defaults={{"staff_only": staff_only}})
"""


def chromium_path() -> str:
    """Debian's Chromium: Playwright's own browser downloads are never used."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerError("Chromium is not installed: apt-get install chromium")


def new_stack(replicas: int = REPLICAS) -> Stack:
    """A stack on free ports (other suites may run a stack at the same time)."""
    first = free_ports(replicas + 2)
    return Stack(
        replicas=replicas,
        port=first,
        base_port=first + 1,
        web_workers=1,
        env={
            # Quick enough for a test, long enough not to flap on a busy 2-core machine.
            "CHAT_PRESENCE_TTL": "10",
            "CHAT_DRAIN_TIMEOUT": "3",
            # A closed page (1001) stays listed this long; tests open and close many.
            "CHAT_PRESENCE_GRACE": "2",
            "LOG_LEVEL": "WARNING",
        },
    )


class ChatStack:
    """The running stack plus what the browser tests need on top of it."""

    def __init__(self, stack: Stack):
        self.stack = stack

    @property
    def url(self) -> str:
        return self.stack.url

    def replica_url(self, index: int) -> str:
        return self.stack.replica(index).url

    def shell(self, code: str) -> str:
        """Run Python in `manage.py shell` against the stack's database."""
        return self.stack.manage("shell", "-c", code).stdout

    def seed(self, users: dict[str, bool], rooms: dict[str, bool], then: str = "") -> None:
        """Users (all with PASSWORD) and rooms; `then`: more shell code, in the same job."""
        spec = json.dumps({"password": PASSWORD, "users": users, "rooms": rooms})
        self.shell(SEED.format(spec=spec) + then)


@dataclass
class Person:
    """One user in one browser context, pinned to one server (a replica or nginx)."""

    name: str
    base: str
    context: BrowserContext
    page: Page
    dialogs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions, CSP violations

    def goto(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def open_room(self, room: str = "lobby") -> Page:
        self.goto(f"/chat/{room}/")
        expect(self.page.locator("#status")).to_have_attribute("data-state", "connected")
        return self.page

    def say(self, text: str) -> None:
        box = self.page.locator("#message-input")
        box.fill(text)
        box.press("Enter")
        # The composer keeps the text until the server has stored and echoed it.
        expect(box).to_have_value("")

    def message(self, text: str):
        """The room messages whose text is exactly `text`."""
        return self.page.locator("#log .msg:not(.private)").filter(
            has=self.page.locator(".body", has_text=re.compile(f"^{re.escape(text)}$"))
        )

    def watch_status(self) -> None:
        """Record every connection state the page shows from now on (see states())."""
        self.page.evaluate(
            """() => {
              const box = document.getElementById("status");
              window.__states = [box.dataset.state];
              new MutationObserver(() => {
                const s = box.dataset.state;
                if (window.__states[window.__states.length - 1] !== s) window.__states.push(s);
              }).observe(box, { attributes: true, attributeFilter: ["data-state"] });
            }"""
        )

    def states(self) -> list[str]:
        return self.page.evaluate("window.__states")


def open_person(
    browser: Browser,
    chat: ChatStack,
    name: str | None,
    replica: int | None = None,
    viewport: dict | None = None,
    color_scheme: str = "light",
) -> Person:
    """A new browser context for `name` (None: anonymous), logged in through the form."""
    base = chat.url if replica is None else chat.replica_url(replica)
    context = browser.new_context(
        viewport=viewport or {"width": 1100, "height": 760},
        locale="en-GB",
        timezone_id="UTC",
        color_scheme=color_scheme,
    )
    context.set_default_timeout(TIMEOUT_MS)
    if replica is not None:
        nginx = chat.url

        def static_from_nginx(route):
            path = route.request.url.split("/static/", 1)[1]
            route.fulfill(response=route.fetch(url=f"{nginx}/static/{path}"))

        context.route(re.compile(r"^https?://[^/]+/static/"), static_from_nginx)
    page = context.new_page()
    person = Person(name or "anonymous", base, context, page)

    def on_dialog(dialog) -> None:
        person.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    def on_console(message) -> None:
        # The pages run under a strict CSP: any violation is a bug in the page.
        if "Content Security Policy" in message.text:
            person.errors.append(message.text)

    page.on("pageerror", lambda exc: person.errors.append(str(exc)))
    page.on("console", on_console)
    if name is not None:
        page.goto(f"{base}/accounts/login/")
        page.fill("#id_username", name)
        page.fill("#id_password", PASSWORD)
        page.click("form.stack-form button[type=submit]")
        expect(page.locator(".whoami-name")).to_have_text(name)
    return person
