"""Management commands: rooms, pushed messages, tokens and bulk users."""

from __future__ import annotations

import io

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from accounts.models import ApiToken, hash_token
from chat.models import Message, Room

from .conftest import recv

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_room_and_update_flag():
    assert "Created public room 'lobby'" in run("create_room", "lobby")
    assert "Updated staff-only room 'lobby'" in run("create_room", "lobby", "--staff-only")
    assert Room.objects.get(name="lobby").staff_only is True
    run("create_room", "lobby")
    assert Room.objects.get(name="lobby").staff_only is False
    run("create_room", "测试")
    assert Room.objects.filter(name="测试").exists()


@pytest.mark.parametrize("name", ["a b", "x" * 65, "", "a/b"])
def test_create_room_rejects_bad_names(name):
    with pytest.raises(CommandError, match="not a valid room name"):
        run("create_room", name)
    assert Room.objects.count() == 0


async def test_push_message_delivers_live(ws, make_user):
    bob = await database_sync_to_async(make_user)("bob")
    listener = await ws.connect(user=bob)
    out = await database_sync_to_async(run)("push_message", "lobby", "maintenance at 5")
    frame = await recv(listener)
    assert frame["message"] == "maintenance at 5" and frame["user"] == "system"
    assert f"Message {frame['id']} delivered" in out
    await database_sync_to_async(run)("push_message", "lobby", "hi", "--as", "bob")
    assert (await recv(listener))["user"] == "bob"


def test_push_message_errors(make_user):
    with pytest.raises(CommandError, match="does not exist"):
        run("push_message", "nowhere", "x")
    with pytest.raises(CommandError, match="not a valid room name"):
        run("push_message", "no way", "x")
    Room.objects.create(name="lobby")
    with pytest.raises(CommandError, match="no user named"):
        run("push_message", "lobby", "x", "--as", "ghost")
    with pytest.raises(CommandError, match="limit is 2000"):
        run("push_message", "lobby", "x" * 2001)
    with pytest.raises(CommandError, match="empty"):
        run("push_message", "lobby", "   ")
    assert Message.objects.count() == 0
    run("push_message", "newroom", "hello", "--create")
    assert Message.objects.get().room.name == "newroom"


def test_system_user_cannot_log_in():
    Room.objects.create(name="lobby")
    run("push_message", "lobby", "x")
    system = get_user_model().objects.get(username="system")
    assert not system.is_active and not system.has_usable_password()


def test_create_token_prints_only_a_working_token(make_user):
    make_user("alice")
    token = run("create_token", "alice").strip()
    assert "\n" not in token and len(token) >= 40
    assert not ApiToken.objects.filter(key_hash=token).exists()  # stored hashed
    assert ApiToken.objects.filter(key_hash=hash_token(token)).exists()
    Room.objects.create(name="lobby")
    response = Client().post(
        "/api/rooms/lobby/messages",
        data='{"message": "hi"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 201
    with pytest.raises(CommandError, match="no user named"):
        run("create_token", "nobody")


def test_create_users_writes_tokens(tmp_path):
    out_file = tmp_path / "tokens.txt"
    message = run("create_users", "--count", "200", "--prefix", "lt", "--tokens-out", str(out_file))
    assert "Created 200 users" in message
    lines = out_file.read_text().splitlines()
    assert len(lines) == 200
    names = [line.split()[0] for line in lines]
    assert names[0] == "lt1" and names[-1] == "lt200"
    assert get_user_model().objects.filter(username__startswith="lt").count() == 200
    username, token = lines[42].split()
    owner = ApiToken.objects.select_related("user").get(key_hash=hash_token(token)).user
    assert owner.username == username
    # again: users exist, fresh tokens are issued
    message = run("create_users", "--count", "200", "--prefix", "lt", "--tokens-out", str(out_file))
    assert "200 existed" in message


def test_create_users_errors(tmp_path):
    with pytest.raises(CommandError, match="at least 1"):
        run("create_users", "--count", "0", "--tokens-out", str(tmp_path / "t"))
    with pytest.raises(CommandError, match="does not exist"):
        run("create_users", "--count", "1", "--tokens-out", str(tmp_path / "no" / "t"))


def test_seed_demo_uses_given_password(monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-123")
    assert "demo-pass-123" in run("seed_demo")
    assert Client().login(username="alice", password="demo-pass-123")
    assert Client().login(username="bob", password="demo-pass-123")


def test_seed_demo_keeps_a_generated_password(monkeypatch, settings, tmp_path):
    """Restarting `make run` must not change the password (it would log pages out)."""
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    settings.DATA_DIR = tmp_path
    first = run("seed_demo").split("password: ")[1].strip()
    hashed = get_user_model().objects.get(username="alice").password
    assert run("seed_demo").split("password: ")[1].strip() == first
    assert get_user_model().objects.get(username="alice").password == hashed
    assert Client().login(username="bob", password=first)
    assert Room.objects.filter(name="lobby").exists()
