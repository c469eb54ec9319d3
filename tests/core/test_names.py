"""Look-alike names (rooms and users), invisible and bidi characters, reaction emoji."""

from __future__ import annotations

import io
import logging

import icu
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from accounts import usernames
from accounts.forms import SignupForm
from accounts.models import UsernameKey
from chat import protocol, textrules
from chat.api import error_response
from chat.models import Message, Reaction, Room
from chat.names import NAME_KEY_MAX, lookalike_detail, name_key, name_skeleton
from chat.protocol.errors import ChatError
from chat.services import rooms

from .conftest import recv

CYRILLIC_LOBBY = "l\u043ebby"  # о: CYRILLIC SMALL LETTER O
FULLWIDTH_LOBBY = "ｌｏｂｂｙ"
CYRILLIC_ALICE = "\u0430lice"  # а: CYRILLIC SMALL LETTER A
RLO = "\u202e"
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"]


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- the key ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lookalike", ["lobby", "LOBBY", "Lobby", CYRILLIC_LOBBY, FULLWIDTH_LOBBY, "1obby", "Ⅼobby"]
)
def test_lookalikes_share_the_key(lookalike):
    assert name_key(lookalike) == name_key("lobby") == "lobby"


def test_case_and_lookalikes_commute():
    assert name_key(CYRILLIC_ALICE) == name_key("alice") == name_key("ALICE")
    assert name_key("Mike") == name_key("mike") == name_key("rnike")  # m looks like rn


def test_the_skeleton_sees_what_case_folding_hides():
    # A capital I looks like a small l: folded first, "AIice" would be "aiice".
    assert name_key("AIice") != name_key("Alice")
    assert name_skeleton("AIice") == name_skeleton("Alice") == "Alice"
    assert name_skeleton("PayPaI") == name_skeleton("PayPal")
    assert name_skeleton("L0BBY") == name_skeleton("LOBBY")
    assert name_skeleton("alice") != name_skeleton("ALICE")  # that one is name_key's


@pytest.mark.parametrize(
    ("one", "other"),
    [("lobby", "lobby2"), ("room-1", "room-2"), ("测试", "測試"), ("alice", "alicia")],
)
def test_different_names_keep_different_keys(one, other):
    assert name_key(one) != name_key(other)


def test_a_key_that_expands_past_the_column_is_hashed():
    key = name_key("\ufdfa" * 64)  # NFKC makes 18 letters of each
    assert key.startswith("#") and len(key) == 65 <= NAME_KEY_MAX
    assert name_key("\ufdfa" * 63) != key


# --- the character tables ----------------------------------------------------------------


def _icu_ranges(pattern: str) -> list[tuple[int, int]]:
    return [(ord(lo), ord(hi)) for lo, hi in icu.UnicodeSet(pattern).ranges()]


def test_tables_are_unicodes_properties():
    assert list(textrules.DEFAULT_IGNORABLE) == _icu_ranges("[:Default_Ignorable_Code_Point:]")
    bidi = {chr(c) for lo, hi in _icu_ranges("[:Bidi_Control:]") for c in range(lo, hi + 1)}
    assert bidi == textrules.BIDI_CONTROLS


@pytest.mark.parametrize(
    "text",
    [
        *ZERO_WIDTH,
        " \u200b \u200d\n\ufeff\t",
        "\u2060" * 50,
        "\u3164\u115f",  # Hangul fillers
        "\u2800",  # braille blank
        "\U000e0041\U000e0042",  # tag characters
        "\u00ad\u034f\ufe0f",
    ],
)
def test_invisible_only_messages_are_empty(text):
    with pytest.raises(ChatError) as caught:
        protocol.parse({"type": "chat_message", "message": text})
    assert caught.value.code == "empty_message"
    for frame in (
        {"type": "private_message", "to": "bob", "message": text},
        {"type": "edit_message", "id": 1, "message": text},
    ):
        with pytest.raises(ChatError, match="no visible characters"):
            protocol.parse(frame)


@pytest.mark.parametrize("text", ["a\u200b", "👨\u200d👩\u200d👧", "\u200dx", "ـ", "٠"])
def test_visible_text_with_invisible_characters_is_not_empty(text):
    assert protocol.parse({"message": text}) == protocol.SendMessage(text)


@pytest.mark.parametrize("control", sorted(textrules.BIDI_CONTROLS))
def test_bidi_controls_are_taken_out_of_messages(control):
    text = f"see {control}txt.exe{control} now"
    assert protocol.parse({"message": text}) == protocol.SendMessage("see txt.exe now")
    with pytest.raises(ChatError) as caught:  # nothing left but them
        protocol.parse({"message": control * 3})
    assert caught.value.code == "empty_message"
    with pytest.raises(ChatError, match="bidirectional control") as caught:
        protocol.parse({"type": "private_message", "to": f"bob{control}", "message": "hi"})
    assert caught.value.code == "invalid_payload"


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("👍", "👍"),
        ("❤️", "❤️"),
        ("❤", "❤️"),  # unqualified: the same reaction as its fully qualified form
        ("👍🏽", "👍🏽"),
        ("\U0001f3f3\ufe0f\u200d\U0001f308",) * 2,  # rainbow flag: a ZWJ sequence
        ("🇺🇦", "🇺🇦"),
        ("1️⃣", "1️⃣"),
    ],
)
def test_reaction_emoji_are_rgi_emoji(sent, stored):
    assert protocol.parse({"type": "reaction", "id": 1, "emoji": sent}) == protocol.React(1, stored)


@pytest.mark.parametrize(
    "emoji",
    ["", "x", "a b", ":)", "1", "👍👍", "👍 ", "🏻", "🇺", RLO, f"{RLO}👍", "👍\u200b", None, 7],
)
def test_reaction_refuses_what_is_not_one_emoji(emoji):
    with pytest.raises(ChatError, match="single emoji") as caught:
        protocol.parse({"type": "reaction", "id": 1, "emoji": emoji})
    assert caught.value.code == "invalid_payload"


def test_the_refusal_names_the_characters_that_differ():
    assert lookalike_detail(CYRILLIC_LOBBY, "lobby") == " (with U+043E CYRILLIC SMALL LETTER O)"
    assert lookalike_detail("AIice", "Alice") == " (with U+0049 LATIN CAPITAL LETTER I)"
    assert lookalike_detail("LOBBY", "lobby") == ""  # case alone shows itself
    assert lookalike_detail(FULLWIDTH_LOBBY, "lobby").endswith("LETTER B, …)")


def test_name_taken_is_a_409_in_the_api():
    assert ChatError("name_taken", "x").status == 409
    assert error_response(ChatError("name_taken", "x")).status_code == 409


# --- rooms -------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("existing", "lookalike"),
    [
        ("lobby", CYRILLIC_LOBBY),
        ("lobby", FULLWIDTH_LOBBY),
        ("lobby", "LOBBY"),
        ("lobby", "Lobby"),
        ("Lobby", "Ⅼobby"),  # ROMAN NUMERAL FIFTY
        ("LOBBY", "L0BBY"),
        ("Lobby", "lobby"),
    ],
)
def test_a_room_that_looks_like_another_is_refused(room, make_user, existing, lookalike):
    room(existing)
    alice = make_user("alice")
    with pytest.raises(ChatError) as caught:
        rooms.open_room(lookalike, alice)
    assert caught.value.code == "name_taken"
    assert f"looks like the existing room {existing!r}" in caught.value.message
    assert rooms.open_room(existing, alice).name == existing
    assert list(Room.objects.values_list("name", flat=True)) == [existing]


@pytest.mark.django_db
def test_the_database_refuses_a_lookalike_room(room):
    room("lobby")
    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.create(name=CYRILLIC_LOBBY)
    assert Room.objects.get(name="lobby").name_key == "lobby"


@pytest.mark.django_db
def test_a_lookalike_created_during_the_check_still_gives_name_taken(room, monkeypatch):
    room("lobby")
    checks = []

    def racing(name, **kwargs):  # the first check runs before the look-alike's insert
        checks.append(name)
        return None if len(checks) == 1 else Room.objects.get(name="lobby")

    monkeypatch.setattr(Room, "looking_like", staticmethod(racing))
    with pytest.raises(ChatError) as caught:
        rooms.create_room("LOBBY")
    assert caught.value.code == "name_taken" and len(checks) == 2
    assert not Room.objects.filter(name="LOBBY").exists()


@pytest.mark.django_db
def test_renaming_a_room_keeps_the_key_and_the_rule(room):
    lobby, other = room("lobby"), room("other")
    other.name = "Other-Room"
    other.save(update_fields=["name"])
    other.refresh_from_db()
    assert other.name_key == "other-roorn"
    other.name = "LOBBY"
    with pytest.raises(ValidationError, match="existing room 'lobby'"):
        other.full_clean()
    lobby.staff_only = True
    lobby.full_clean()  # its own name is no look-alike of itself
    lobby.save()


@pytest.mark.django_db
def test_room_page_explains_a_taken_name(client, room, make_user):
    room("lobby")
    client.force_login(make_user("alice"))
    response = client.get(f"/chat/{CYRILLIC_LOBBY}/")
    assert response.status_code == 409
    page = response.content.decode()
    assert "looks like the existing room &#x27;lobby&#x27;" in page
    assert 'href="/chat/lobby/"' in page


@pytest.mark.django_db(transaction=True)
async def test_websocket_to_a_lookalike_room_closes_with_4409(ws, room, make_user):
    await database_sync_to_async(room)("lobby")
    alice = await database_sync_to_async(make_user)("alice")
    comm = await ws.connect(FULLWIDTH_LOBBY, user=alice, skip_greeting=False)
    error = await recv(comm)
    assert error["type"] == "error" and error["code"] == "name_taken"
    assert "'lobby'" in error["message"]
    assert (await comm.receive_output(timeout=2))["code"] == 4409


@pytest.mark.django_db(transaction=True)
async def test_messages_and_reactions_over_the_socket(ws, make_user):
    alice = await database_sync_to_async(make_user)("alice")
    comm = await ws.connect("lobby", user=alice)
    await comm.send_json_to({"message": "\u200b\u2060\ufeff", "client_id": "z"})
    error = await recv(comm)
    assert (error["code"], error["client_id"]) == ("empty_message", "z")
    await comm.send_json_to({"message": f"{RLO}olleh"})
    sent = await recv(comm)
    assert sent["message"] == "olleh"
    stored = await database_sync_to_async(Message.objects.get)(pk=sent["id"])
    assert stored.body == "olleh"
    await comm.send_json_to({"type": "reaction", "id": sent["id"], "emoji": RLO})
    assert (await recv(comm))["code"] == "invalid_payload"
    await comm.send_json_to({"type": "reaction", "id": sent["id"], "emoji": "❤"})
    assert (await recv(comm))["emoji"] == "❤️"
    assert await database_sync_to_async(
        lambda: list(Reaction.objects.values_list("emoji", flat=True))
    )() == ["❤️"]


@pytest.mark.django_db
def test_room_commands_refuse_lookalikes(room):
    room("lobby")
    with pytest.raises(CommandError, match="looks like the existing room 'lobby'"):
        run("create_room", CYRILLIC_LOBBY)
    with pytest.raises(CommandError, match="looks like the existing room 'lobby'"):
        run("push_message", "LOBBY", "hi", "--create")
    assert "Updated staff-only room 'lobby'" in run("create_room", "lobby", "--staff-only")
    assert list(Room.objects.values_list("name", flat=True)) == ["lobby"]


# --- users -------------------------------------------------------------------------------


def signup(client: Client, username: str):
    return client.post(
        "/accounts/signup/",
        {
            "username": username,
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
        },
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("existing", "lookalike"),
    [
        ("alice", CYRILLIC_ALICE),
        ("alice", "\u0430lic\u0435"),
        ("alice", "ALICE"),
        ("Alice", "AIice"),  # capital I
    ],
)
def test_signup_refuses_a_lookalike_username(client, make_user, existing, lookalike):
    make_user(existing)
    response = signup(client, lookalike)
    assert response.status_code == 200
    page = response.content.decode()
    assert f"looks too much like the existing user {existing}" in page or (
        "A user with that username already exists." in page  # Django's own, for case
    )
    assert list(get_user_model().objects.values_list("username", flat=True)) == [existing]


@pytest.mark.django_db
@pytest.mark.parametrize("name", [f"bob{RLO}", "bob\u200b", "bob\u2066"])
def test_signup_refuses_invisible_and_bidi_characters(client, name):
    response = signup(client, name)
    assert response.status_code == 200 and "errorlist" in response.content.decode()
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_signup_refuses_the_system_name(client, settings):
    response = signup(client, "Syst\u0435m")  # Cyrillic е
    assert "This username is reserved." in response.content.decode()
    assert signup(client, "newbie").status_code == 302
    assert UsernameKey.objects.get(user__username="newbie").key == "newbie"


@pytest.mark.django_db
def test_the_form_checks_before_it_saves(make_user):
    make_user("alice")
    data = {"password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"}
    form = SignupForm({"username": CYRILLIC_ALICE, **data})
    assert not form.is_valid()
    assert form.errors["username"] == [
        "This username (with U+0430 CYRILLIC SMALL LETTER A) looks too much like the "
        "existing user alice; pick another."
    ]
    assert SignupForm({"username": "alicia", **data}).is_valid()


@pytest.mark.django_db
def test_signup_that_loses_the_race_gets_a_form_error(make_user):
    form = SignupForm(
        {"username": "alice", "password1": "a-long-pass-phrase", "password2": "a-long-pass-phrase"}
    )
    assert form.is_valid()
    make_user(CYRILLIC_ALICE)  # signed up between validation and save
    assert form.save() is None
    assert "looks too much like the existing user аlice" in str(form.errors["username"])
    assert list(get_user_model().objects.values_list("username", flat=True)) == [CYRILLIC_ALICE]


@pytest.mark.django_db
def test_the_unique_key_decides_a_race_and_takes_the_user_back(make_user, monkeypatch):
    make_user("alice")
    monkeypatch.setattr(usernames, "_holder", lambda *a, **k: None)  # both checks pass
    with pytest.raises(IntegrityError) as caught, transaction.atomic():
        get_user_model().objects.create_user(CYRILLIC_ALICE, password="x")
    assert not isinstance(caught.value, usernames.UsernameTaken)  # the unique index said no
    assert get_user_model().objects.count() == 1


@pytest.mark.django_db
def test_user_saves_keep_the_key(make_user, django_assert_num_queries):
    alice = make_user("alice")
    assert UsernameKey.objects.get(user=alice).key == "alice"
    with django_assert_num_queries(1):  # a login's save: no key work
        alice.save(update_fields=["last_login"])
    alice.first_name = "Alice"
    alice.save()  # same name: no refusal
    alice.username = "alice2"
    alice.save()
    assert UsernameKey.objects.get(user=alice).key == "alice2"
    make_user("bob")
    alice.username = "BOB"
    with pytest.raises(usernames.UsernameTaken, match="existing user 'bob'"):
        alice.save()


@pytest.mark.django_db
def test_create_users_writes_keys_and_refuses_lookalikes(tmp_path, make_user):
    make_user("us\u0435r2")  # Cyrillic е
    with pytest.raises(CommandError, match="looks like the existing user"):
        run("create_users", "--count", "3", "--tokens-out", str(tmp_path / "t"))
    assert not get_user_model().objects.filter(username="user1").exists()
    run("create_users", "--count", "3", "--start", "5", "--tokens-out", str(tmp_path / "t"))
    keys = UsernameKey.objects.filter(username__startswith="user").values_list("key", flat=True)
    assert sorted(keys) == ["user5", "user6", "user7"]


@pytest.mark.django_db
def test_seed_demo_refuses_to_sit_beside_a_lookalike(make_user, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-phrase")
    make_user(CYRILLIC_ALICE)
    with pytest.raises(CommandError, match="looks like the existing user"):
        run("seed_demo")


@pytest.mark.django_db
def test_admin_user_forms_check_lookalikes(client, make_user):
    make_user("alice")
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    response = client.post(
        "/admin/auth/user/add/",
        {
            "username": CYRILLIC_ALICE,
            "usable_password": "true",
            "password1": "a-long-pass-phrase",
            "password2": "a-long-pass-phrase",
        },
    )
    assert response.status_code == 200
    assert "looks too much like the existing user alice" in response.content.decode()


# --- the migrations: names that already collide ------------------------------------------


def _migrate(*targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


@pytest.mark.django_db(transaction=True)
def test_migrations_key_existing_names_oldest_first(caplog):
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    _migrate(("chat", "0002_room_name_key"), ("accounts", "0002_username_key"))
    try:
        old = (
            MigrationExecutor(connection)
            .loader.project_state(
                [("chat", "0002_room_name_key"), ("accounts", "0002_username_key")]
            )
            .apps
        )
        OldRoom, OldUser = old.get_model("chat", "Room"), old.get_model("auth", "User")
        for name in ("lobby", "LOBBY", CYRILLIC_LOBBY, "other"):
            OldRoom.objects.create(name=name)
        for name in ("alice", "Alice", CYRILLIC_ALICE, "bob"):
            OldUser.objects.create(username=name, password="!")
        with caplog.at_level(logging.WARNING):
            _migrate(*latest)
    finally:
        _migrate(*latest)
    keys = dict(Room.objects.values_list("name", "name_key"))
    assert keys == {"lobby": "lobby", "LOBBY": None, CYRILLIC_LOBBY: None, "other": "other"}
    keys = dict(UsernameKey.objects.values_list("username", "key"))
    assert keys == {"alice": "alice", "Alice": None, CYRILLIC_ALICE: None, "bob": "bob"}
    assert "'LOBBY' (id" in caplog.text and "looks like the older user 'alice'" in caplog.text
    # The ones left without a key keep working under their own names ...
    assert rooms.open_room("LOBBY", get_user_model().objects.get(username="bob")).name == "LOBBY"
    run("create_room", "LOBBY", "--staff-only")
    capital = get_user_model().objects.get(username="Alice")
    capital.set_password("new-pass-phrase")
    capital.save()
    # ... and reserve nothing beyond what the oldest already does.
    with pytest.raises(ChatError, match="existing room 'lobby'"):
        rooms.create_room("L\u043eBBY")
    capital.username = "ALICE"
    with pytest.raises(usernames.UsernameTaken):
        capital.save()


@pytest.mark.django_db
def test_rebuild_name_keys_repairs_stale_and_missing_keys(room, make_user):
    room("lobby")
    room("other")
    Room.objects.filter(name="lobby").update(name_key="stale")  # as after an ICU upgrade
    Room.objects.filter(name="other").update(name_key=None, name_skeleton=None)
    make_user("alice")
    get_user_model().objects.bulk_create([get_user_model()(username="ALICE")])  # no signals
    with pytest.raises(CommandError, match="3 stale name keys"):
        run("rebuild_name_keys", "--check")
    out = run("rebuild_name_keys")
    assert "user 'ALICE' looks like 'alice': left without keys" in out
    assert "3 name keys rewritten." in out
    assert dict(Room.objects.values_list("name", "name_key")) == {
        "lobby": "lobby",
        "other": "other",
    }
    keys = dict(UsernameKey.objects.values_list("username", "key"))
    assert keys == {"alice": "alice", "ALICE": None}
    assert run("rebuild_name_keys", "--check").splitlines()[-1] == "0 name keys stale."
