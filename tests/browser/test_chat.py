"""Two people on two replicas chat in real Chromium: everything a room page does."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"


def online_names(person) -> list[str]:
    return person.page.locator("#users .user-name").all_inner_texts()


def test_two_replicas_chat_typing_reactions_edit_delete_pm_and_xss(people):
    alice = people("alice", replica=1)
    bob = people("bob", replica=2)
    carol = people("carol")  # through nginx, in the same room: must not see the PM
    for person in (alice, bob, carol):
        person.open_room("lobby")

    # Online lists show everyone, on both replicas.
    for person in (alice, bob):
        expect(person.page.locator("#users .user-name")).to_have_text(
            [person.name, *sorted({"alice", "bob", "carol"} - {person.name})]
        )

    # Chat both ways.
    alice.say("hello from replica one")
    expect(bob.message("hello from replica one")).to_have_count(1)
    bob.say("hi alice, replica two here")
    expect(alice.message("hi alice, replica two here")).to_have_count(1)
    expect(alice.message("hi alice, replica two here").locator(".author")).to_have_text("bob")

    # Shift+Enter is a new line; Enter sends the whole message.
    box = alice.page.locator("#message-input")
    box.click()
    box.type("line one")
    box.press("Shift+Enter")
    box.type("line two")
    expect(box).to_have_value("line one\nline two")
    box.press("Enter")
    expect(bob.message("line one\nline two")).to_have_count(1)

    # "X is typing…" while bob types.
    bob.page.locator("#message-input").type("thinking", delay=20)
    expect(alice.page.locator("#typing")).to_have_text("bob is typing…")
    bob.page.locator("#message-input").fill("")

    # A reaction by bob shows at alice, with its count; alice's own is marked as hers.
    original = "react, edit, then delete me"
    alice.say(original)
    at_bob = bob.message(original)
    at_bob.hover()
    at_bob.locator(".act-react").click()
    bob.page.locator("#reaction-picker .pick[data-emoji='🎉']").click()
    at_alice = alice.message(original)
    chip = at_alice.locator(".chip[data-emoji='🎉']")
    expect(chip.locator(".chip-count")).to_have_text("1")
    expect(chip).to_have_attribute("aria-pressed", "false")
    chip.click()  # alice adds the same emoji
    expect(at_bob.locator(".chip[data-emoji='🎉'] .chip-count")).to_have_text("2")
    expect(chip).to_have_attribute("aria-pressed", "true")

    # An edit (↑ in the empty composer edits your last message) shows at bob, marked.
    alice.page.locator("#message-input").press("ArrowUp")
    editor = at_alice.locator(".edit-form textarea")
    expect(editor).to_have_value(original)
    edited = "react, edit, then delete me (edited text)"
    editor.fill(edited)
    editor.press("Enter")
    at_bob = bob.message(edited)
    expect(at_bob).to_have_count(1)
    expect(at_bob.locator(".edited")).to_be_visible()
    expect(at_bob.locator(".chip[data-emoji='🎉'] .chip-count")).to_have_text("2")
    # bob may not edit or delete alice's message.
    expect(at_bob.locator(".act-edit")).to_have_count(0)
    expect(at_bob.locator(".act-delete")).to_have_count(0)

    # A delete shows at bob.
    at_alice = alice.message(edited)
    at_alice.hover()
    at_alice.locator(".act-delete").click()
    at_alice.locator(".confirm-delete .btn-danger").click()
    expect(bob.message(edited)).to_have_count(0)
    expect(alice.message(edited)).to_have_count(0)

    # A private message started from the online list reaches bob only.
    alice.page.locator("#users .user-btn", has_text="bob").click()
    expect(alice.page.locator("#pm-target")).to_contain_text("bob")
    alice.page.keyboard.type("a secret for bob only")
    alice.page.keyboard.press("Enter")
    incoming = bob.page.locator("#log .msg.private.incoming", has_text="a secret for bob only")
    expect(incoming).to_have_count(1)
    expect(incoming.locator(".pm-tag")).to_have_text("alice → you")
    outgoing = alice.page.locator("#log .msg.private.outgoing", has_text="a secret for bob only")
    expect(outgoing.locator(".pm-tag")).to_have_text("You → bob")
    alice.page.locator("#pm-cancel").click()
    expect(alice.page.locator("#pm-target")).to_be_hidden()

    # Markup in a message is text: no element, no script, no dialog (checked at teardown).
    alice.say(XSS)
    for person in (bob, carol, alice):
        expect(person.message(XSS)).to_have_count(1)
        assert person.page.locator("#log img").count() == 0

    # carol saw the room's messages but not the private one.
    expect(carol.message("hello from replica one")).to_have_count(1)
    assert carol.page.locator("#log .msg.private").count() == 0
    assert "a secret for bob only" not in carol.page.locator("#log").inner_text()


def test_error_notice_keeps_what_was_typed(people):
    dave = people("dave", replica=1)
    page = dave.open_room("lobby")
    box = page.locator("#message-input")
    box.fill("/pm nobody-by-that-name are you there?")
    box.press("Enter")
    notice = page.locator("#notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("not sent")
    expect(notice).to_contain_text("nobody-by-that-name")
    expect(box).to_have_value("/pm nobody-by-that-name are you there?")
    expect(box).to_be_editable()
    # Fixing it and sending works, and the stale notice goes away.
    box.fill("never mind, hello room")
    box.press("Enter")
    expect(box).to_have_value("")
    expect(dave.message("never mind, hello room")).to_have_count(1)
    expect(notice).to_be_hidden()


def test_replica_restart_reconnects_and_resumes_exactly_once(people, chat_stack):
    alice = people("alice", replica=1)
    bob = people("bob", replica=2)
    alice.open_room("lobby")
    bob.open_room("lobby")
    alice.say("before the restart")
    expect(bob.message("before the restart")).to_have_count(1)
    alice.watch_status()

    stack = chat_stack.stack
    stack.signal_replica(1)  # SIGTERM: the replica drains and exits
    expect(alice.page.locator("#status")).to_have_attribute("data-state", "reconnecting")
    expect(alice.page.locator("#status")).to_contain_text("Reconnecting")
    sent = [f"while alice was away {i}" for i in range(3)]
    for text in sent:
        bob.say(text)
    bob.say("/pm alice a private word while you were away")
    stack.wait_replica(1, timeout=30)
    stack.start_replica(1)

    # Back on the same replica (within the backoff cap of 15 s); everything bob said
    # meanwhile appears exactly once.
    expect(alice.page.locator("#status")).to_have_attribute(
        "data-state", "connected", timeout=30_000
    )
    for text in sent:
        expect(alice.message(text)).to_have_count(1)
    expect(alice.message("before the restart")).to_have_count(1)
    # The private message sent while she was away comes with the resume, once.
    missed_pm = alice.page.locator(
        "#log .msg.private.incoming", has_text="a private word while you were away"
    )
    expect(missed_pm).to_have_count(1)
    ids = alice.page.locator("#log .msg[data-id]").evaluate_all("els => els.map(e => e.dataset.id)")
    assert len(ids) == len(set(ids)), "a message is shown twice"
    assert [int(i) for i in ids] == sorted(int(i) for i in ids), "the log is out of order"
    states = alice.states()
    assert states[0] == "connected" and "reconnecting" in states and states[-1] == "connected"

    # And the conversation simply goes on, both ways.
    alice.say("back again")
    expect(bob.message("back again")).to_have_count(1)
    bob.say("welcome back")
    expect(alice.message("welcome back")).to_have_count(1)


def test_load_older_scrolls_back_through_history(people, chat_stack):
    chat_stack.shell(
        "from django.contrib.auth import get_user_model\n"
        "from chat.models import Message, Room\n"
        "room, _ = Room.objects.get_or_create(name='archive')\n"
        "bob = get_user_model().objects.get(username='bob')\n"
        "Message.objects.bulk_create("
        "[Message(room=room, user=bob, body=f'old message {i}') for i in range(1, 71)])\n"
    )
    bob = people("bob", replica=2)
    page = bob.open_room("archive")
    log = page.locator("#log .msg")
    expect(log).to_have_count(50)
    expect(log.first.locator(".body")).to_have_text("old message 21")
    expect(page.locator("#log-start")).to_be_hidden()
    page.locator("#load-older").click()
    expect(log).to_have_count(70)
    expect(log.first.locator(".body")).to_have_text("old message 1")
    expect(page.locator("#load-older")).to_be_hidden()
    expect(page.locator("#log-start")).to_be_visible()
    bodies = log.locator(".body").all_inner_texts()
    assert bodies == [f"old message {i}" for i in range(1, 71)]


def test_phone_sized_screen_and_keyboard(people):
    phone = {"width": 390, "height": 760}
    carol = people("carol", replica=2, viewport=phone)
    alice = people("alice", replica=1)
    alice.open_room("lobby")
    page = carol.open_room("lobby")
    # Nothing overflows sideways on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= phone["width"]
    # The online list is one button away, and picking someone starts a private message.
    toggle = page.locator("#users-toggle")
    expect(toggle).to_be_visible()
    expect(page.locator("#users-pane")).not_to_be_in_viewport()
    toggle.click()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.locator("#users .user-btn", has_text="alice").click()
    expect(page.locator("#pm-target")).to_contain_text("alice")
    expect(page.locator("#message-input")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#pm-target")).to_be_hidden()

    # Keyboard only: type, send, then reach the message and react with the keyboard.
    page.keyboard.type("typed without a mouse")
    page.keyboard.press("Enter")
    expect(alice.message("typed without a mouse")).to_have_count(1)
    mine = carol.message("typed without a mouse")
    mine.focus()
    page.keyboard.press("Tab")
    expect(mine.locator(".act-react")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#reaction-picker .pick").first).to_be_focused()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")  # ❤️
    expect(alice.message("typed without a mouse").locator(".chip[data-emoji='❤️']")).to_be_visible()
    # Everything interactive has a name for screen readers.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, textarea, input, a')]
              .filter(el => el.offsetParent !== null)
              .filter(el => !(el.getAttribute('aria-label') || el.textContent.trim()
                              || (el.labels && el.labels.length) || el.title))
              .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    assert re.search(r"Messages in #lobby", page.locator("#log").get_attribute("aria-label"))
