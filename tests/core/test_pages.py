"""Server-rendered pages, accounts, security headers and health endpoints."""

from __future__ import annotations

import pytest

from chat.models import Room

pytestmark = pytest.mark.django_db


def test_root_redirects_to_index(client):
    response = client.get("/")
    assert response.status_code == 302 and response["Location"] == "/chat/"


def test_index_hides_staff_rooms_from_non_staff(client, room, make_user):
    room("lobby")
    room("ops", staff_only=True)
    page = client.get("/chat/").content.decode()
    assert "lobby" in page and "ops" not in page
    client.force_login(make_user("alice"))
    assert "ops" not in client.get("/chat/").content.decode()
    client.force_login(make_user("sam", staff=True))
    assert "ops" in client.get("/chat/").content.decode()


def test_room_page_created_on_first_visit_by_a_user(client, make_user):
    client.force_login(make_user("alice"))
    response = client.get("/chat/测试/")
    assert response.status_code == 200
    assert Room.objects.filter(name="测试").exists()
    page = response.content.decode()
    assert 'data-room="测试"' in page and 'id="composer"' in page


def test_room_pages_past_the_hourly_room_creation_limit_answer_429(client, make_user, settings):
    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 1
    client.force_login(make_user("alice"))
    assert client.get("/chat/first/").status_code == 200
    response = client.get("/chat/second/")
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "too many rooms" in response.content.decode()
    assert not Room.objects.filter(name="second").exists()
    assert client.get("/chat/first/").status_code == 200


def test_room_page_errors(client, room, make_user):
    assert client.get("/chat/nowhere/").status_code == 404  # anonymous does not create
    assert not Room.objects.filter(name="nowhere").exists()
    client.force_login(make_user("alice"))
    for bad in ("a%20b", "a@b", "x" * 65, "a.b"):
        assert client.get(f"/chat/{bad}/").status_code == 404
    room("ops", staff_only=True)
    response = client.get("/chat/ops/")
    assert response.status_code == 403 and "staff only" in response.content.decode()


def test_anonymous_can_read_a_public_room_page(client, room):
    room("lobby")
    page = client.get("/chat/lobby/").content.decode()
    assert "Log in" in page and 'id="composer"' not in page


def test_signup_logs_in(client):
    response = client.post(
        "/accounts/signup/",
        {
            "username": "newbie",
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
        },
    )
    assert response.status_code == 302
    assert "newbie" in client.get("/chat/").content.decode()


def test_signup_errors_are_shown(client):
    response = client.post(
        "/accounts/signup/", {"username": "x y", "password1": "a", "password2": "b"}
    )
    assert response.status_code == 200
    assert "errorlist" in response.content.decode()


def test_login_and_logout(client, make_user):
    make_user("alice", password="a-long-pass-phrase")
    assert client.get("/accounts/login/").status_code == 200
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "a-long-pass-phrase"}
    )
    assert response.status_code == 302
    assert "alice" in client.get("/chat/").content.decode()
    assert client.post("/accounts/logout/").status_code == 302
    assert "Log in" in client.get("/chat/").content.decode()


def test_security_headers(client):
    response = client.get("/chat/")
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Request-ID"]


def test_request_id_is_passed_through_when_sane(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="abc-123")["X-Request-ID"] == "abc-123"
    assert client.get("/healthz", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"] != "bad id\n"


def test_health_endpoints(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert b"chat_http_requests_total" in metrics.content
    # Readiness, host handling and outages: tests/core/test_health.py.


def test_admin_lists_chat_models_with_search_and_filters(client, make_user, room):
    from django.contrib.auth import get_user_model

    from chat.models import Message, PrivateMessage, Reaction

    admin = get_user_model().objects.create_superuser("root", password="pw-root-123")
    alice = make_user("alice")
    lobby = room("lobby")
    msg = Message.objects.create(room=lobby, user=alice, body="findme")
    PrivateMessage.objects.create(sender=alice, recipient=admin, body="dm")
    Reaction.objects.create(message=msg, user=alice, emoji="👍")
    client.force_login(admin)
    for path in (
        "chat/room",
        "chat/message",
        "chat/privatemessage",
        "chat/reaction",
        "accounts/apitoken",
    ):
        response = client.get(f"/admin/{path}/", {"q": "a"})
        assert response.status_code == 200, path
        assert "search" in response.content.decode().lower()
    page = client.get("/admin/chat/message/", {"q": "findme"}).content.decode()
    assert "findme" in page and 'id="changelist-filter"' in page
