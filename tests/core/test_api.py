"""HTTP API: history pages and pushed messages, every status, live delivery to sockets."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from chat.models import Message

from .conftest import recv

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/rooms/{}/messages"


def post(client: Client, room: str, body, token: str | None = None, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    if token:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post(URL.format(room), data=data, content_type="application/json", **extra)


def error_code(response) -> str:
    payload = response.json()
    assert payload["error"]["message"]
    return payload["error"]["code"]


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def alice_token(alice, token_for):
    return token_for(alice)


def test_post_stores_and_returns_201(client, room, alice_token):
    room("lobby")
    response = post(client, "lobby", {"message": "from a script"}, alice_token)
    assert response.status_code == 201
    payload = response.json()
    assert payload["type"] == "chat_message" and payload["user"] == "alice"
    assert payload["message"] == "from a script" and payload["room"] == "lobby"
    assert Message.objects.get(pk=payload["id"]).body == "from a script"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{nope", 400, "invalid_json"),
        ("[1]", 400, "invalid_payload"),
        ({"text": "x"}, 400, "invalid_payload"),
        ({"message": 5}, 400, "invalid_payload"),
        ({"message": "  "}, 400, "empty_message"),
        ({"message": "x" * 2001}, 400, "message_too_long"),
        ("x" * 70_000, 400, "message_too_long"),
        ("[" * 20_000, 400, "invalid_json"),
        ('{"message": "' + "é" * 40_000 + '"}', 400, "message_too_long"),
        (b"\xff\xfe{}", 400, "invalid_json"),
    ],
)
def test_post_bad_bodies(client, room, alice_token, body, status, code):
    room("lobby")
    response = post(client, "lobby", body, alice_token)
    assert response.status_code == status and error_code(response) == code
    assert Message.objects.count() == 0


def test_post_needs_a_valid_token(client, room):
    room("lobby")
    response = post(client, "lobby", {"message": "x"})
    assert response.status_code == 401 and error_code(response) == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = post(client, "lobby", {"message": "x"}, "forged")
    assert response.status_code == 401 and error_code(response) == "not_authenticated"
    response = client.post(
        URL.format("lobby"),
        data="{}",
        content_type="application/json",
        HTTP_AUTHORIZATION="Basic abc",
    )
    assert response.status_code == 401
    assert Message.objects.count() == 0


def test_post_room_errors(client, room, alice_token, make_user, token_for):
    room("ops", staff_only=True)
    assert post(client, "nowhere", {"message": "x"}, alice_token).status_code == 404
    response = post(client, "bad name", {"message": "x"}, alice_token)
    assert response.status_code == 404 and error_code(response) == "not_found"
    response = post(client, "ops", {"message": "x"}, alice_token)
    assert response.status_code == 403 and error_code(response) == "forbidden"
    boss = token_for(make_user("boss", staff=True))
    assert post(client, "ops", {"message": "x"}, boss).status_code == 201


def test_post_rate_limited(client, room, alice_token, settings):
    settings.CHAT_RATE_LIMIT_BURST = 2
    settings.CHAT_RATE_LIMIT_PER_SECOND = 0.1
    room("lobby")
    assert post(client, "lobby", {"message": "1"}, alice_token).status_code == 201
    assert post(client, "lobby", {"message": "2"}, alice_token).status_code == 201
    response = post(client, "lobby", {"message": "3"}, alice_token)
    assert response.status_code == 429 and error_code(response) == "rate_limited"
    assert response["Retry-After"]
    assert Message.objects.count() == 2


def test_session_post_needs_csrf(room, alice):
    room("lobby")
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = post(client, "lobby", {"message": "x"})
    assert response.status_code == 403 and error_code(response) == "forbidden"
    client.get("/chat/lobby/")  # sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    response = post(client, "lobby", {"message": "x"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201


def test_other_methods_are_refused(client, room):
    room("lobby")
    assert client.put(URL.format("lobby")).status_code == 405


def test_get_history_pages(client, room, alice):
    lobby = room("lobby")
    Message.objects.bulk_create([Message(room=lobby, user=alice, body=f"m{i}") for i in range(7)])
    ids = list(Message.objects.order_by("id").values_list("id", flat=True))
    page = client.get(URL.format("lobby"), {"limit": 3}).json()
    assert [m["id"] for m in page["messages"]] == ids[4:] and page["has_more"] is True
    assert page["room"] == "lobby"
    page = client.get(URL.format("lobby"), {"limit": 3, "before": ids[4]}).json()
    assert [m["id"] for m in page["messages"]] == ids[1:4]
    page = client.get(URL.format("lobby"), {"after": ids[5]}).json()
    assert [m["id"] for m in page["messages"]] == ids[6:] and page["has_more"] is False


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"before": -3}])
def test_get_bad_parameters(client, room, query):
    room("lobby")
    response = client.get(URL.format("lobby"), query)
    assert response.status_code == 400 and error_code(response) == "invalid_payload"


def test_get_permissions(client, room, alice_token, make_user, token_for):
    room("ops", staff_only=True)
    room("lobby")
    assert client.get(URL.format("lobby")).status_code == 200  # anonymous may read
    assert client.get(URL.format("nowhere")).status_code == 404
    assert client.get(URL.format("ops")).status_code == 403
    assert (
        client.get(URL.format("ops"), HTTP_AUTHORIZATION=f"Bearer {alice_token}").status_code == 403
    )
    staff = token_for(make_user("boss", staff=True))
    assert client.get(URL.format("ops"), HTTP_AUTHORIZATION=f"Bearer {staff}").status_code == 200
    assert client.get(URL.format("lobby"), HTTP_AUTHORIZATION="Bearer forged").status_code == 401


async def test_pushed_message_is_delivered_live(ws, alice, alice_token, make_user):
    bob = await database_sync_to_async(make_user)("bob")
    listener = await ws.connect(user=bob)
    client = Client()
    response = await database_sync_to_async(post)(
        client, "lobby", {"message": "pushed"}, alice_token
    )
    assert response.status_code == 201
    frame = await recv(listener)
    assert frame["type"] == "chat_message" and frame["id"] == response.json()["id"]
    assert frame["message"] == "pushed" and frame["user"] == "alice"
