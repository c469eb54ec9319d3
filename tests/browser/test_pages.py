"""Sign up, log in, log out; the room index with live counts; staff-only rooms; /api/rooms."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser


def test_sign_up_log_out_and_log_in_again(people):
    visitor = people(None)
    page = visitor.goto("/accounts/signup/")
    expect(page.locator("h1")).to_have_text("Create your account")
    # Errors come back on the page, next to their field.
    page.fill("#id_username", "erin")
    page.fill("#id_password1", "short")
    page.fill("#id_password2", "different")
    page.click("form.stack-form button[type=submit]")
    expect(page.locator(".field-invalid")).to_have_count(1)
    expect(page.locator(".field-errors")).to_contain_text("didn’t match")
    page.fill("#id_password1", "a-long-pass-phrase-42")
    page.fill("#id_password2", "a-long-pass-phrase-42")
    page.click("form.stack-form button[type=submit]")
    expect(page).to_have_url(visitor.base + "/chat/")
    expect(page.locator(".whoami-name")).to_have_text("erin")
    page.get_by_role("button", name="Log out").click()
    account = page.get_by_role("navigation", name="Account")
    expect(account.get_by_role("link", name="Log in")).to_be_visible()
    account.get_by_role("link", name="Log in").click()
    page.fill("#id_username", "erin")
    page.fill("#id_password", "wrong password")
    page.click("form.stack-form button[type=submit]")
    expect(page.locator(".form-errors")).to_be_visible()
    page.fill("#id_password", "a-long-pass-phrase-42")
    page.click("form.stack-form button[type=submit]")
    expect(page.locator(".whoami-name")).to_have_text("erin")


def test_index_explains_bad_room_names_before_submitting(people):
    bob = people("bob")
    page = bob.goto("/chat/")
    box = page.locator("#room-name-input")
    feedback = page.locator("#room-name-feedback")
    box.fill("team chat!")
    expect(feedback).to_contain_text("Not allowed in a room name: space, “!”")
    expect(box).to_have_attribute("aria-invalid", "true")
    box.press("Enter")
    expect(page).to_have_url(bob.base + "/chat/")  # not submitted
    box.fill("x" * 65)
    expect(feedback).to_contain_text("at most 64")
    box.fill("lobby")
    expect(feedback).to_have_text("Opens #lobby.")
    box.fill("café-测试")
    expect(feedback).to_contain_text("does not exist yet")
    expect(box).to_have_attribute("aria-invalid", "false")
    box.press("Enter")
    expect(page.locator("#room-title")).to_contain_text("café-测试")
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")


def test_index_online_counts_are_live(people):
    bob = people("bob")
    page = bob.goto("/chat/")
    count = page.locator(".room-item[data-room='lobby'] .online-count .n")
    expect(count).to_have_text("0")
    alice = people("alice", replica=1)
    alice.open_room("lobby")
    expect(count).to_have_text("1", timeout=15_000)  # the index polls /api/rooms
    expect(count.locator("xpath=..")).to_have_class("online-count is-active")


def test_staff_only_rooms_are_hidden_from_and_closed_to_non_staff(people, chat_stack):
    bob = people("bob")
    page = bob.goto("/chat/")
    expect(page.locator(".room-item[data-room='lobby']")).to_be_visible()
    expect(page.locator(".room-item[data-room='ops']")).to_have_count(0)
    listed = page.request.get(bob.base + "/api/rooms").json()["rooms"]
    assert "ops" not in [room["name"] for room in listed]
    response = page.goto(bob.base + "/chat/ops/")
    assert response is not None and response.status == 403
    expect(page.locator("h1")).to_have_text("This room is not open to you")
    expect(page.locator("#composer")).to_have_count(0)
    # Even a hand-made socket gets nothing of the room.
    refused = page.evaluate(
        """() => new Promise(done => {
              const ws = new WebSocket(`ws://${location.host}/ws/chat/ops/`);
              const got = [];
              ws.onmessage = e => got.push(JSON.parse(e.data).type);
              ws.onclose = e => done({code: e.code, got});
            })"""
    )
    assert refused == {"code": 4403, "got": ["error"]}

    sam = people("sam")
    page = sam.goto("/chat/")
    staff_room = page.locator(".room-item[data-room='ops']")
    expect(staff_room.locator(".badge-staff")).to_have_text("staff only")
    staff_room.locator("a").click()
    expect(page.locator("#status")).to_have_attribute("data-state", "connected")
    expect(page.locator("#room")).to_have_attribute("data-staff", "1")


def test_staff_may_edit_and_delete_anyone_s_message(people):
    bob = people("bob", replica=2)
    bob.open_room("lobby")
    bob.say("a message for the moderator")
    sam = people("sam", replica=1)
    sam.open_room("lobby")
    at_sam = sam.message("a message for the moderator")
    at_sam.hover()
    at_sam.locator(".act-edit").click()
    at_sam.locator(".edit-form textarea").fill("a message, moderated")
    at_sam.locator(".edit-form textarea").press("Enter")
    expect(bob.message("a message, moderated").locator(".edited")).to_be_visible()
    at_sam = sam.message("a message, moderated")
    at_sam.hover()
    at_sam.locator(".act-delete").click()
    at_sam.get_by_role("button", name="Delete", exact=True).click()
    expect(bob.message("a message, moderated")).to_have_count(0)


def test_anonymous_visitors_read_public_rooms_and_are_asked_to_log_in(people):
    bob = people("bob", replica=2)
    bob.open_room("lobby")
    bob.say("hello whoever is reading")
    visitor = people(None)
    page = visitor.open_room("lobby")
    expect(visitor.message("hello whoever is reading")).to_have_count(1)
    expect(page.locator("#composer")).to_have_count(0)
    expect(page.locator(".signin-prompt")).to_contain_text("Log in to write in #lobby")
    expect(page.locator("#log .act-react")).to_have_count(0)
    bob.say("and live too")
    expect(visitor.message("and live too")).to_have_count(1)
    # Unknown or invalid rooms get a page that says why.
    response = page.goto(visitor.base + "/chat/no.dots/")
    assert response is not None and response.status == 404
    expect(page.locator("main")).to_contain_text("No such room")
    page.goto(visitor.base + "/chat/not-created-yet/")
    expect(page.locator("main")).to_contain_text("does not exist yet")


def test_api_rooms_lists_visible_rooms_with_online_counts(people, chat_stack):
    anonymous = people(None)
    api = anonymous.context.request
    body = api.get(chat_stack.url + "/api/rooms").json()
    names = {r["name"]: r for r in body["rooms"]}
    assert "lobby" in names and "ops" not in names
    assert names["lobby"] == {
        "name": "lobby",
        "staff_only": False,
        "online": names["lobby"]["online"],
        "url": "/chat/lobby/",
    }
    response = api.get(chat_stack.url + "/api/rooms")
    assert response.headers["cache-control"] == "no-store"
    assert api.post(chat_stack.url + "/api/rooms").status in (403, 405)
    sam = people("sam", replica=1)
    sam.open_room("ops")
    staff = {r["name"]: r for r in sam.context.request.get(sam.base + "/api/rooms").json()["rooms"]}
    assert staff["ops"]["staff_only"] is True and staff["ops"]["online"] == 1
