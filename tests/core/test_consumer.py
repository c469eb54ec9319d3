"""The WebSocket protocol end to end through the real ASGI stack, on PostgreSQL + Redis."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from accounts.models import ApiToken
from chat.models import Message, PrivateMessage, Reaction

from .conftest import nothing, recv, recv_type, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def staff(make_user):
    return make_user("sam", staff=True)


# --- handshake, history and user_list ----------------------------------------------------


async def test_greeting_is_history_then_user_list(ws, alice, token_for, room):
    lobby = await database_sync_to_async(room)("lobby")
    for i in range(3):
        await database_sync_to_async(Message.objects.create)(room=lobby, user=alice, body=f"m{i}")
    comm = await ws.connect(user=alice, skip_greeting=False)
    history = await recv(comm)
    assert history["type"] == "history"
    assert [m["message"] for m in history["messages"]] == ["m0", "m1", "m2"]
    assert history["has_more"] is False
    first = history["messages"][0]
    assert set(first) >= {"type", "id", "room", "user", "message", "timestamp"}
    assert first["user"] == "alice" and first["room"] == "lobby"
    assert first["timestamp"].endswith("Z")
    assert await recv(comm) == {"type": "user_list", "users": ["alice"]}


async def test_history_on_join_is_capped_and_says_has_more(ws, alice, token_for, room, settings):
    settings.CHAT_HISTORY_ON_JOIN = 5
    lobby = await database_sync_to_async(room)("lobby")
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room=lobby, user=alice, body=f"m{i}") for i in range(8)]
    )
    comm = await ws.connect(user=alice, skip_greeting=False)
    history = await recv(comm)
    assert [m["message"] for m in history["messages"]] == ["m3", "m4", "m5", "m6", "m7"]
    assert history["has_more"] is True


async def test_first_visit_creates_room_with_unicode_name(ws, alice, token_for):
    comm = await ws.connect("测试", user=alice)
    await comm.send_json_to({"type": "chat_message", "message": "你好"})
    frame = await recv(comm)
    assert frame["room"] == "测试" and frame["message"] == "你好"


@pytest.mark.parametrize("name", ["a b", "a@b", "x" * 65, "dot.name", "%F0"])
async def test_invalid_room_name_is_refused(ws, alice, token_for, name):
    comm = await ws.connect(name, user=alice, skip_greeting=False)
    error = await recv(comm)
    assert error["type"] == "error" and error["code"] == "not_found"
    assert (await comm.receive_output(timeout=2))["code"] == 4404


async def test_anonymous_cannot_create_rooms(ws):
    comm = await ws.connect("nowhere", skip_greeting=False)
    assert (await recv(comm))["code"] == "not_found"
    assert (await comm.receive_output(timeout=2))["code"] == 4404


# --- chat messages -----------------------------------------------------------------


async def test_message_reaches_everyone_with_stored_id(ws, alice, bob, token_for):
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    assert await recv(a) == {"type": "user_join", "user": "bob"}
    await a.send_json_to({"type": "chat_message", "message": "hello"})
    got_a, got_b = await recv(a), await recv(b)
    assert got_a == got_b
    assert got_a["type"] == "chat_message" and got_a["user"] == "alice"
    stored = await database_sync_to_async(Message.objects.select_related("room").get)(
        pk=got_a["id"]
    )
    assert stored.body == "hello" and stored.room.name == "lobby"


async def test_tutorial_bare_message_frame(ws, alice, token_for):
    a = await ws.connect(user=alice)
    await a.send_to(text_data=json.dumps({"message": "plain"}))
    assert (await recv(a))["message"] == "plain"


async def test_ids_increase_within_a_room(ws, alice, token_for):
    a = await ws.connect(user=alice)
    ids = []
    for i in range(5):
        await a.send_json_to({"message": f"n{i}"})
        ids.append((await recv(a))["id"])
    assert ids == sorted(ids) and len(set(ids)) == 5


async def test_rooms_are_isolated(ws, alice, bob, token_for):
    a = await ws.connect("one", user=alice)
    b = await ws.connect("two", user=bob)
    await a.send_json_to({"message": "only one"})
    await recv(a)
    assert await nothing(b)


# --- private messages ----------------------------------------------------------------------


async def test_private_message_reaches_every_connection_of_target(
    ws, alice, bob, make_user, token_for
):
    carol = await database_sync_to_async(make_user)("carol")
    a = await ws.connect("one", user=alice)
    b1 = await ws.connect("two", user=bob)
    b2 = await ws.connect("three", user=bob)
    c = await ws.connect("two", user=carol)
    await recv_type(b1, "user_join")
    await a.send_json_to({"type": "private_message", "to": "bob", "message": "psst"})
    receipt = await recv(a)
    assert receipt["type"] == "private_message_delivered"
    assert receipt["target"] == "bob" and receipt["message"] == "psst"
    for conn in (b1, b2):
        frame = await recv(conn)
        assert frame == {
            "type": "private_message",
            "id": receipt["id"],
            "user": "alice",
            "to": "bob",
            "message": "psst",
            "timestamp": receipt["timestamp"],
        }
    assert await nothing(c)
    pm = await database_sync_to_async(PrivateMessage.objects.get)(pk=receipt["id"])
    assert (pm.sender_id, pm.recipient_id, pm.body) == (alice.pk, bob.pk, "psst")


async def test_pm_command_in_chat_box(ws, alice, bob, token_for):
    a = await ws.connect(user=alice)
    b = await ws.connect("elsewhere", user=bob)
    await a.send_json_to({"message": "/pm bob secret plan"})
    assert (await recv(a))["type"] == "private_message_delivered"
    frame = await recv(b)
    assert frame["type"] == "private_message" and frame["message"] == "secret plan"


async def test_private_message_errors(ws, alice, token_for):
    a = await ws.connect(user=alice)
    await a.send_json_to({"type": "private_message", "to": "nobody", "message": "x"})
    error = await recv(a)
    assert error["code"] == "unknown_user" and "nobody" in error["message"]
    await a.send_json_to({"type": "private_message", "to": "alice", "message": "x"})
    assert (await recv(a))["code"] == "invalid_payload"
    assert await database_sync_to_async(PrivateMessage.objects.count)() == 0


# --- edit, delete, reactions -------------------------------------------------------------------


async def test_author_edits_and_deletes(ws, alice, bob, token_for):
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    await recv(a)  # bob joined
    await a.send_json_to({"message": "typo"})
    msg_id = (await recv(a))["id"]
    await recv(b)
    await a.send_json_to({"type": "edit_message", "id": msg_id, "message": "fixed"})
    for conn in (a, b):
        edited = await recv(conn)
        assert edited["type"] == "message_edited" and edited["id"] == msg_id
        assert edited["message"] == "fixed" and edited["edited_at"].endswith("Z")
    await a.send_json_to({"type": "delete_message", "id": msg_id})
    for conn in (a, b):
        assert await recv(conn) == {"type": "message_deleted", "id": msg_id}
    # Deleted messages leave history...
    await a.send_json_to({"type": "history"})
    assert (await recv(a))["messages"] == []
    # ...but the row stays, marked.
    stored = await database_sync_to_async(Message.objects.get)(pk=msg_id)
    assert stored.deleted_at is not None and stored.body == "fixed"


async def test_others_cannot_edit_or_delete_but_staff_can(ws, alice, bob, staff, token_for):
    a = await ws.connect(user=alice)
    await a.send_json_to({"message": "mine"})
    msg_id = (await recv(a))["id"]
    b = await ws.connect(user=bob)
    await recv(a)  # bob joined
    await b.send_json_to({"type": "edit_message", "id": msg_id, "message": "hijack"})
    assert (await recv(b))["code"] == "forbidden"
    await b.send_json_to({"type": "delete_message", "id": msg_id})
    assert (await recv(b))["code"] == "forbidden"
    assert (await database_sync_to_async(Message.objects.get)(pk=msg_id)).body == "mine"
    s = await ws.connect(user=staff)
    await s.send_json_to({"type": "delete_message", "id": msg_id})
    assert (await recv_type(s, "message_deleted"))["id"] == msg_id


async def test_edit_unknown_or_other_room_message_is_not_found(ws, alice, token_for):
    a = await ws.connect("one", user=alice)
    await a.send_json_to({"message": "in one"})
    msg_id = (await recv(a))["id"]
    other = await ws.connect("two", user=alice)
    await other.send_json_to({"type": "edit_message", "id": msg_id, "message": "x"})
    assert (await recv(other))["code"] == "not_found"
    await other.send_json_to({"type": "reaction", "id": 999999, "emoji": "👍"})
    assert (await recv(other))["code"] == "not_found"


async def test_reaction_toggles_with_counts(ws, alice, bob, token_for):
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    await recv(a)
    await a.send_json_to({"message": "react to me"})
    msg_id = (await recv(a))["id"]
    await recv(b)
    await b.send_json_to({"type": "reaction", "id": msg_id, "emoji": "👍"})
    added = await recv(a)
    assert added == {
        "type": "reaction",
        "id": msg_id,
        "emoji": "👍",
        "user": "bob",
        "action": "added",
        "count": 1,
    }
    await recv(b)
    await a.send_json_to({"type": "reaction", "id": msg_id, "emoji": "👍"})
    assert (await recv(b))["count"] == 2
    await recv(a)
    await b.send_json_to({"type": "reaction", "id": msg_id, "emoji": "👍"})
    removed = await recv(a)
    assert removed["action"] == "removed" and removed["count"] == 1
    await recv(b)
    # history carries who reacted with what
    await a.send_json_to({"type": "history"})
    (entry,) = (await recv(a))["messages"]
    assert entry["reactions"] == {"👍": ["alice"]}
    assert await database_sync_to_async(Reaction.objects.count)() == 1


# --- typing ---------------------------------------------------------------------------------


async def test_typing_goes_to_others_at_most_every_interval(ws, alice, bob, token_for, settings):
    settings.CHAT_TYPING_INTERVAL = 0.5
    a = await ws.connect(user=alice)
    a2 = await ws.connect(user=alice)  # alice's second tab
    b = await ws.connect(user=bob)
    await recv(a)
    await recv(a2)
    await a.send_json_to({"type": "typing"})
    await a.send_json_to({"type": "typing"})
    assert await recv(b) == {"type": "typing", "user": "alice"}
    assert await nothing(b, 0.2)  # the second one was within the interval
    assert await nothing(a) and await nothing(a2)  # not echoed to alice's own tabs
    await asyncio.sleep(0.5)
    await a.send_json_to({"type": "typing"})
    assert await recv(b) == {"type": "typing", "user": "alice"}


# --- history paging and resume -------------------------------------------------------------


async def test_history_before_pages_back(ws, alice, token_for, room):
    lobby = await database_sync_to_async(room)("lobby")
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room=lobby, user=alice, body=f"m{i}") for i in range(10)]
    )
    ids = await database_sync_to_async(
        lambda: list(Message.objects.order_by("id").values_list("id", flat=True))
    )()
    a = await ws.connect(user=alice)
    await a.send_json_to({"type": "history", "before": ids[6], "limit": 4})
    page = await recv(a)
    assert [m["id"] for m in page["messages"]] == ids[2:6]
    assert page["has_more"] is True
    await a.send_json_to({"type": "history", "before": ids[2], "limit": 4})
    page = await recv(a)
    assert [m["id"] for m in page["messages"]] == ids[0:2] and page["has_more"] is False


async def test_resume_returns_everything_missed(ws, alice, bob, token_for):
    a = await ws.connect(user=alice)
    await a.send_json_to({"message": "seen"})
    last_seen = (await recv(a))["id"]
    await a.disconnect()
    b = await ws.connect(user=bob)
    sent = []
    for i in range(3):
        await b.send_json_to({"message": f"missed {i}"})
        sent.append((await recv(b))["id"])
    a2 = await ws.connect(user=alice)
    await a2.send_json_to({"type": "resume", "after": last_seen})
    frame = await recv(a2)
    assert frame["type"] == "history" and frame["has_more"] is False
    assert [m["id"] for m in frame["messages"]] == sent


LONG = "歡迎😀!" * 499  # 1,996 characters, about 5,500 bytes of UTF-8


async def test_resume_after_many_long_messages_pages_in_bounded_frames(ws, alice, room, settings):
    """520 missed messages of 2,000 multi-byte characters (about 2.9 MB) come back whole,
    in pages each under CHAT_PAGE_MAX_BYTES, the client paging on while has_more."""
    lobby = await database_sync_to_async(room)("lobby")
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room=lobby, user=alice, body=f"{i} {LONG}") for i in range(520)]
    )
    settings.CHAT_HISTORY_BURST = 100
    a = await ws.connect(user=alice)
    got, after, pages = [], 0, 0
    while True:
        await a.send_json_to({"type": "resume", "after": after})
        raw = await a.receive_from(timeout=10)
        assert len(raw.encode()) <= settings.CHAT_PAGE_MAX_BYTES + 100
        frame = json.loads(raw)
        assert frame["reason"] == "resume" and frame["messages"]
        got += frame["messages"]
        pages += 1
        after = frame["messages"][-1]["id"]
        if not frame["has_more"]:
            break
    assert [m["message"] for m in got] == [f"{i} {LONG}" for i in range(520)]
    assert pages >= 520 * len(LONG.encode()) // settings.CHAT_PAGE_MAX_BYTES


async def test_history_pages_are_capped_in_bytes_from_the_cursor_side(ws, alice, room, settings):
    lobby = await database_sync_to_async(room)("lobby")
    await database_sync_to_async(Message.objects.bulk_create)(
        [Message(room=lobby, user=alice, body=f"{i} {LONG}") for i in range(60)]
    )
    settings.CHAT_PAGE_MAX_BYTES = 64 * 1024
    a = await ws.connect(user=alice)
    await a.send_json_to({"type": "history", "limit": 60})
    page = await recv(a)
    texts = [m["message"] for m in page["messages"]]
    # The newest ones (next to the cursor), as many as fit, and "there is more".
    assert texts == [f"{i} {LONG}" for i in range(60 - len(texts), 60)]
    assert 1 <= len(texts) < 60 and page["has_more"] is True


async def test_private_history_is_capped_in_bytes_too(ws, alice, bob, settings):
    from chat.models import PrivateMessage

    await database_sync_to_async(PrivateMessage.objects.bulk_create)(
        [PrivateMessage(sender=bob, recipient=alice, body=f"{i} {LONG}") for i in range(100)]
    )
    settings.CHAT_PAGE_MAX_BYTES = 64 * 1024
    a = await ws.connect(user=alice)
    got, after = [], 0
    while True:
        await a.send_json_to({"type": "resume", "after": 10**9, "private_after": after})
        assert (await recv(a))["type"] == "history"
        raw = await a.receive_from(timeout=10)
        frame = json.loads(raw)
        assert frame["type"] == "private_history" and len(raw.encode()) < 64 * 1024 + 100
        got += frame["messages"]
        after = frame["messages"][-1]["id"]
        if not frame["has_more"]:
            break
    assert [m["message"] for m in got] == [f"{i} {LONG}" for i in range(100)]


async def test_history_and_resume_draw_from_a_per_connection_budget(ws, alice, settings):
    settings.CHAT_HISTORY_PER_SECOND = 0.5
    settings.CHAT_HISTORY_BURST = 3
    a = await ws.connect(user=alice)
    for frame in ({"type": "history"}, {"type": "resume", "after": 0}, {"type": "history"}):
        await a.send_json_to(frame)
        assert (await recv(a))["type"] == "history"
    await a.send_json_to({"type": "history", "limit": 100})
    error = await recv(a)
    assert error["code"] == "rate_limited" and error["for"] == "history"
    assert "history and resume requests" in error["message"] and "try again in" in error["message"]
    # Another connection has its own budget, and the socket lives on.
    b = await ws.connect(user=alice)
    await b.send_json_to({"type": "history"})
    assert (await recv(b))["type"] == "history"
    await a.send_json_to({"type": "ping"})
    assert await recv(a) == {"type": "pong"}


async def test_ping_pong(ws, alice, token_for):
    a = await ws.connect(user=alice)
    await a.send_json_to({"type": "ping"})
    assert await recv(a) == {"type": "pong"}


# --- errors never close the connection ------------------------------------------------------


async def test_every_malformed_frame_gets_an_error_and_the_socket_lives(ws, alice, token_for):
    a = await ws.connect(user=alice)
    cases = [
        ("{not json", "invalid_json"),
        ("[1,2]", "invalid_payload"),
        ('"just a string"', "invalid_payload"),
        ('{"type":"teleport"}', "unknown_type"),
        ('{"type":"chat_message","message":"  "}', "empty_message"),
        (json.dumps({"type": "chat_message", "message": "x" * 2001}), "message_too_long"),
        ("x" * 70_000, "message_too_long"),
        # Under the limit in characters, over it in UTF-8 bytes.
        ('"' + "é" * 40_000 + '"', "message_too_long"),
        # Too deep for the parser (it used to end the socket with 1011).
        ("[" * 20_000, "invalid_json"),
        ('{"a":' * 5_000 + "1" + "}" * 5_000, "invalid_json"),
        ('{"type":"edit_message","id":"seven","message":"m"}', "invalid_payload"),
    ]
    for text, code in cases:
        await a.send_to(text_data=text)
        error = await recv(a)
        assert error["type"] == "error" and error["code"] == code, (text[:40], error)
        assert isinstance(error["message"], str) and error["message"]
    await a.send_to(bytes_data=b"\x00\x01")
    assert (await recv(a))["code"] == "invalid_payload"
    # still healthy: a normal message goes through and nothing bad was stored
    await a.send_json_to({"message": "still here"})
    assert (await recv(a))["message"] == "still here"
    assert await database_sync_to_async(Message.objects.count)() == 1


async def test_error_frame_names_the_frame_type(ws, alice, token_for):
    a = await ws.connect(user=alice)
    await a.send_json_to({"type": "reaction", "id": 1, "emoji": ""})
    assert (await recv(a))["for"] == "reaction"


async def test_rate_limit(ws, alice, token_for, settings):
    settings.CHAT_RATE_LIMIT_PER_SECOND = 1
    settings.CHAT_RATE_LIMIT_BURST = 3
    a = await ws.connect(user=alice)
    for i in range(3):
        await a.send_json_to({"message": f"ok {i}"})
        assert (await recv(a))["type"] == "chat_message"
    await a.send_json_to({"message": "too fast"})
    error = await recv(a)
    assert error["code"] == "rate_limited"
    await a.send_json_to({"type": "typing"})  # typing spends the same budget
    assert (await recv(a))["code"] == "rate_limited"
    assert await database_sync_to_async(Message.objects.count)() == 3
    await asyncio.sleep(1.1)
    await a.send_json_to({"message": "after a pause"})
    assert (await recv(a))["type"] == "chat_message"


# --- who may do what -----------------------------------------------------------------------


async def test_anonymous_reads_public_rooms_but_never_sends(ws, alice, token_for, room):
    await database_sync_to_async(room)("lobby")
    anon = await ws.connect()  # same-origin browser without a session
    a = await ws.connect(user=alice)
    assert await recv(anon) == {"type": "user_join", "user": "alice"}
    await a.send_json_to({"message": "hello reader"})
    assert (await recv(anon))["message"] == "hello reader"
    for frame in (
        {"message": "hi"},
        {"type": "typing"},
        {"type": "reaction", "id": 1, "emoji": "👍"},
        {"type": "private_message", "to": "alice", "message": "x"},
    ):
        await anon.send_json_to(frame)
        assert (await recv(anon))["code"] == "not_authenticated"
    await anon.send_json_to({"type": "history"})
    assert (await recv(anon))["type"] == "history"


async def test_session_cookie_authenticates_same_origin(ws, alice):
    cookie = await database_sync_to_async(session_cookie)(alice)
    a = await ws.connect(cookie=cookie, skip_greeting=False)
    await recv(a)
    assert await recv(a) == {"type": "user_list", "users": ["alice"]}
    await a.send_json_to({"message": "from the browser"})
    assert (await recv(a))["user"] == "alice"


async def test_foreign_origin_is_refused(ws, alice):
    cookie = await database_sync_to_async(session_cookie)(alice)
    await ws.connect(cookie=cookie, origin=b"http://evil.example", expect=False)


@pytest.mark.parametrize(
    "host, origin",
    [
        (b"127.0.0.1:8080", b"http://127.0.0.1:9999"),  # another port, same host
        (b"127.0.0.1:8080", b"https://127.0.0.1:8080"),  # another scheme
        (b"127.0.0.1:8080", b"http://127.0.0.1"),  # the default port is another port
        (b"evil.example", b"http://evil.example"),  # its own origin, but a host not allowed
        (b"testserver", b"null"),
    ],
)
async def test_origin_must_match_scheme_host_and_port(ws, alice, host, origin):
    cookie = await database_sync_to_async(session_cookie)(alice)
    await ws.connect(cookie=cookie, host=host, origin=origin, expect=False)


async def test_the_sites_own_origin_and_trusted_origins_are_accepted(ws, alice, settings):
    cookie = await database_sync_to_async(session_cookie)(alice)
    await ws.connect(cookie=cookie, host=b"127.0.0.1:8080", origin=b"http://127.0.0.1:8080")
    # Behind the trusted proxy, the scheme is the one it reports.
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    await ws.connect(
        cookie=cookie,
        host=b"testserver",
        origin=b"https://testserver",
        headers=[(b"x-forwarded-proto", b"https")],
    )
    await ws.connect(
        cookie=cookie,
        host=b"testserver",
        origin=b"http://testserver",
        headers=[(b"x-forwarded-proto", b"https")],
        expect=False,
    )
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.example.org"]
    await ws.connect(cookie=cookie, host=b"internal:8000", origin=b"https://chat.example.com")
    await ws.connect(cookie=cookie, host=b"internal:8000", origin=b"https://eu.example.org")
    await ws.connect(
        cookie=cookie, host=b"internal:8000", origin=b"http://chat.example.com", expect=False
    )


async def test_no_origin_ignores_cookie_but_accepts_token(ws, alice, token_for, room):
    await database_sync_to_async(room)("lobby")
    cookie = await database_sync_to_async(session_cookie)(alice)
    anon = await ws.connect(cookie=cookie, origin=None, skip_greeting=False)
    await recv(anon)
    assert await recv(anon) == {"type": "user_list", "users": []}  # not alice
    await anon.send_json_to({"message": "x"})
    assert (await recv(anon))["code"] == "not_authenticated"
    tok = await ws.connect(user=alice, origin=None)
    await tok.send_json_to({"message": "token works"})
    assert (await recv(tok))["user"] == "alice"


async def test_bad_token_is_refused_with_4401(ws):
    comm = await ws.connect(token="not-a-real-token", origin=None, skip_greeting=False)
    assert (await recv(comm))["code"] == "not_authenticated"
    assert (await comm.receive_output(timeout=2))["code"] == 4401


async def test_staff_only_room(ws, alice, bob, staff, token_for, room):
    await database_sync_to_async(room)("ops", staff_only=True)
    s = await ws.connect("ops", user=staff)
    a = await ws.connect("ops", user=alice, skip_greeting=False)
    error = await recv(a)
    assert error["code"] == "forbidden"
    assert (await a.receive_output(timeout=2))["code"] == 4403
    anon = await ws.connect("ops", skip_greeting=False)
    assert (await recv(anon))["code"] == "forbidden"
    await s.send_json_to({"message": "staff secret"})
    assert (await recv(s))["message"] == "staff secret"
    # bob connected elsewhere hears nothing of the staff room
    b = await ws.connect("lobby", user=bob)
    assert await nothing(b)


# --- channel-layer traps ----------------------------------------------------------------------


async def test_idle_connection_still_receives_after_15_seconds(ws, alice, bob, token_for):
    """redis-py 6's 5 s socket timeout used to kill idle receive loops with 1011."""
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    await recv(a)
    await asyncio.sleep(15)
    await b.send_json_to({"message": "wake up"})
    assert (await recv(a, timeout=5))["message"] == "wake up"


async def test_burst_from_many_senders_is_delivered_completely(ws, make_user, token_for, settings):
    """10 senders × 5 messages at once into a room of 30: nothing dropped."""
    settings.CHAT_RATE_LIMIT_BURST = 10
    senders = [await database_sync_to_async(make_user)(f"s{i}") for i in range(10)]
    comms = [await ws.connect(user=u, origin=None) for u in senders]
    listeners = [await ws.connect("lobby") for _ in range(20)]
    everyone = comms + listeners
    await asyncio.gather(
        *(c.send_json_to({"message": f"{i}-{n}"}) for n in range(5) for i, c in enumerate(comms))
    )
    expected = 50
    for conn in everyone:
        got = set()
        while len(got) < expected:
            frame = await conn.receive_json_from(timeout=10)
            if frame["type"] == "chat_message":
                got.add(frame["id"])
        assert len(got) == expected
    assert await database_sync_to_async(Message.objects.count)() == expected


# --- client ids and private resume -----------------------------------------------------------


async def test_client_id_is_echoed_on_the_result_and_on_errors(ws, alice, bob):
    a = await ws.connect(user=alice)
    b = await ws.connect("elsewhere", user=bob)
    await a.send_json_to({"type": "chat_message", "message": "mine", "client_id": "c-1"})
    assert (await recv(a))["client_id"] == "c-1"
    await a.send_json_to(
        {"type": "private_message", "to": "bob", "message": "x", "client_id": "c-2"}
    )
    assert (await recv(a))["client_id"] == "c-2"  # the sender's receipt
    assert "client_id" not in await recv(b)  # not the recipient's copy
    await a.send_json_to({"type": "chat_message", "message": " ", "client_id": "c-3"})
    error = await recv(a)
    assert (error["code"], error["client_id"], error["for"]) == (
        "empty_message",
        "c-3",
        "chat_message",
    )
    for bad in (7, "", "has space", "x" * 65):
        await a.send_json_to({"type": "chat_message", "message": "m", "client_id": bad})
        assert (await recv(a))["code"] == "invalid_payload"
    assert await database_sync_to_async(Message.objects.count)() == 1


async def test_resume_can_include_missed_private_messages(ws, alice, bob):
    a = await ws.connect(user=alice)
    b = await ws.connect(user=bob)
    await recv(a)  # bob joined
    await b.send_json_to({"type": "private_message", "to": "alice", "message": "seen"})
    seen = (await recv_type(a, "private_message"))["id"]
    await a.disconnect()
    await b.send_json_to({"type": "private_message", "to": "alice", "message": "missed 1"})
    await b.send_json_to({"type": "private_message", "to": "alice", "message": "missed 2"})
    other_tab = await ws.connect("other", user=alice)
    await other_tab.send_json_to({"type": "private_message", "to": "bob", "message": "from tab"})
    # Every send is stored and relayed before the resuming tab opens (or it would get the
    # inbox copies live, ahead of its history).
    while (await recv(other_tab))["type"] != "private_message_delivered":
        pass  # bob's messages may still reach this tab live
    receipts = []
    while len(receipts) < 3:  # "seen", "missed 1", "missed 2"; bob also gets "from tab"
        frame = await recv(b)
        if frame["type"] == "private_message_delivered":
            receipts.append(frame["message"])
    assert receipts == ["seen", "missed 1", "missed 2"]
    a2 = await ws.connect(user=alice)
    await a2.send_json_to({"type": "resume", "after": 0, "private_after": seen})
    assert (await recv(a2))["type"] == "history"
    frame = await recv(a2)
    assert frame["type"] == "private_history" and frame["has_more"] is False
    got = [(m["user"], m["to"], m["message"]) for m in frame["messages"]]
    assert got == [
        ("bob", "alice", "missed 1"),
        ("bob", "alice", "missed 2"),
        ("alice", "bob", "from tab"),
    ]
    ids = [m["id"] for m in frame["messages"]]
    assert ids == sorted(ids) and ids[0] > seen


async def test_private_resume_needs_a_user(ws, room):
    await database_sync_to_async(room)("lobby")
    anon = await ws.connect()
    await anon.send_json_to({"type": "resume", "after": 0, "private_after": 0})
    assert (await recv(anon))["type"] == "history"
    assert (await recv(anon))["code"] == "not_authenticated"


# --- abuse limits at the handshake (services/abuse.py has the mechanics) --------------------


async def test_sockets_over_the_per_user_limit_are_refused_with_4429(ws, alice, settings):
    settings.CHAT_WS_PER_USER = 2
    token = await database_sync_to_async(lambda: ApiToken.issue(alice)[1])()
    first = await ws.connect(token=token)
    await ws.connect(token=token)
    third = await ws.connect(token=token, skip_greeting=False)
    error = await recv(third)
    assert error["code"] == "rate_limited" and error["limit"] == "ws_user"
    assert (await third.receive_output(timeout=3))["code"] == 4429
    # A closed socket gives its slot back at once.
    await first.disconnect()
    await ws.connect(token=token)


async def test_rooms_created_per_hour_are_capped(ws, alice, settings):
    settings.CHAT_ROOMS_PER_USER_PER_HOUR = 1
    await ws.connect("first-room", user=alice)
    refused = await ws.connect("second-room", user=alice, skip_greeting=False)
    error = await recv(refused)
    assert error["code"] == "rate_limited" and error["limit"] == "room_creation"
    assert error["retry_after"] > 0
    assert (await refused.receive_output(timeout=3))["code"] == 4429
    # Existing rooms stay open to the same user.
    await ws.connect("first-room", user=alice)
