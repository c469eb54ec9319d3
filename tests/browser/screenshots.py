"""Screenshots of the UI for docs/screenshots/: the room index and a busy room.

    .venv/bin/python tests/browser/screenshots.py [OUT_DIR]     (default docs/screenshots)

Starts its own stack (see harness.py), seeds a conversation, opens a few people in real
Chromium and saves small PNGs. test_screenshots.py runs the same capture into a temp
dir, so this script keeps working as the UI changes.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make `tools/` (the stack) and `tests` importable
    ROOT = Path(__file__).resolve().parents[2]
    sys.path[:0] = [str(ROOT / "tools"), str(ROOT)]

from playwright.sync_api import Browser, expect, sync_playwright

from tests.browser.harness import (
    CHROMIUM_ARGS,
    ChatStack,
    Person,
    chromium_path,
    new_stack,
    open_person,
)

USERS = {
    "alice": False,
    "bob": False,
    "carol": False,
    "kenji": False,
    "maria": False,
    "omar": False,
    "priya": False,
    "sam": True,
}
ROOMS = {"lobby": False, "design": False, "random": False, "team-42": False, "café": False}
STAFF_ROOMS = {"ops": True}

# (minutes ago, author, text, {emoji: [who reacted]}, edited)
CONVERSATION = [
    (38, "priya", "Morning all ☕ The deploy window opens at 10:00.", {}, False),
    (
        37,
        "kenji",
        "Staging is green. Last night's load test: p99 delivery 41 ms over three replicas.",
        {"🎉": ["maria", "priya", "alice"], "👍": ["bob"]},
        False,
    ),
    (37, "kenji", "Full report in docs/benchmarks.md", {}, False),
    (30, "maria", "Nice! Did the reconnect fix make it in?", {}, False),
    (
        29,
        "bob",
        "It did: restart a replica and every client resumes from the last id it saw. "
        "No gaps, no duplicates.",
        {"👍": ["maria", "kenji"]},
        False,
    ),
    (
        22,
        "omar",
        "Tried it on my phone on the train: “reconnecting” for a second, then it caught up 🚆",
        {"😂": ["alice", "bob"]},
        False,
    ),
    (
        15,
        "alice",
        "Release notes draft:\n• edits and reactions\n• private messages\n• typing indicators",
        {"❤️": ["priya", "kenji", "alice"], "👀": ["maria"]},
        False,
    ),
    (14, "priya", "LGTM. Ship it 🚀", {"🚀": ["bob", "omar"]}, False),
    (6, "maria", "Fixed the typo in the changelog, thanks Omar", {}, True),
    (2, "bob", "Deploying now. Keep an eye on the online counts 👀", {}, False),
]

SEED_CONVERSATION = """
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from chat.models import Message, Reaction, Room
users = {{u.username: u for u in get_user_model().objects.all()}}
room = Room.objects.get(name="lobby")
now = timezone.now()
for minutes, author, text, reactions, edited in {conversation!r}:
    at = now - timedelta(minutes=minutes)
    m = Message.objects.create(room=room, user=users[author], body=text)
    Message.objects.filter(pk=m.pk).update(
        created_at=at, edited_at=at + timedelta(minutes=1) if edited else None
    )
    for emoji, who in reactions.items():
        for name in who:
            Reaction.objects.create(message=m, user=users[name], emoji=emoji)
"""


def seed(chat: ChatStack) -> None:
    chat.seed(
        USERS, {**ROOMS, **STAFF_ROOMS}, then=SEED_CONVERSATION.format(conversation=CONVERSATION)
    )


def capture(browser: Browser, chat: ChatStack, out: Path) -> list[Path]:
    """Open people, stage the scene, save index.png, room.png and room-phone.png."""
    out.mkdir(parents=True, exist_ok=True)
    opened: list[Person] = []

    def person(name: str, room: str | None, replica: int | None = None, **kw) -> Person:
        p = open_person(browser, chat, name, replica, **kw)
        opened.append(p)
        if room:
            p.open_room(room)
        return p

    try:
        alice = person("alice", "lobby", replica=1, viewport={"width": 1200, "height": 820})
        bob = person("bob", "lobby", replica=2)
        carol = person("carol", "lobby", replica=1)
        person("maria", "design", replica=2)

        # The staff view of the index: every room, the staff-only one marked.
        sam = person("sam", None, viewport={"width": 1200, "height": 720})
        sam.goto("/chat/")
        sam.page.fill("#room-name-input", "release party!")
        expect(sam.page.locator("#room-name-feedback")).to_contain_text("Not allowed")
        sam.page.wait_for_timeout(300)
        shots = [out / "index.png"]
        sam.page.screenshot(path=shots[-1])

        # A busy room: history with reactions and an edit, a private message, typing.
        bob.page.locator("#users .user-btn", has_text="alice").click()
        bob.page.keyboard.type("Can you watch ws-2's dashboard while I deploy?")
        bob.page.keyboard.press("Enter")
        expect(alice.page.locator("#log .msg.private")).to_have_count(1)
        carol.page.locator("#message-input").type("Good luck everyone", delay=15)
        expect(alice.page.locator("#typing")).to_contain_text("carol is typing")
        alice.page.locator("#message-input").fill("On it 👍")
        alice.message(CONVERSATION[6][2]).hover()  # her own message: its toolbar shows
        shots.append(out / "room.png")
        alice.page.screenshot(path=shots[-1])

        phone = person("omar", "lobby", viewport={"width": 390, "height": 780})
        phone.page.locator("#message-input").click()
        shots.append(out / "room-phone.png")
        phone.page.screenshot(path=shots[-1])
        return shots
    finally:
        for p in opened:
            p.context.close()


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    with new_stack() as stack, sync_playwright() as p:
        chat = ChatStack(stack)
        seed(chat)
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            for shot in capture(browser, chat, out):
                print(f"{shot} ({shot.stat().st_size // 1024} KB)")
        finally:
            browser.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
