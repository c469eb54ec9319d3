"""protocol.parse: every frame type and every validation error, without a socket."""

from __future__ import annotations

import pytest

from chat import protocol
from chat.protocol.errors import ChatError


def code_of(content) -> str:
    with pytest.raises(ChatError) as caught:
        protocol.parse(content)
    assert caught.value.message  # always a sentence for people
    return caught.value.code


def test_chat_message_typed_and_tutorial_form():
    assert protocol.parse({"type": "chat_message", "message": "hi"}) == protocol.SendMessage("hi")
    assert protocol.parse({"message": "hi"}) == protocol.SendMessage("hi")


def test_pm_command_becomes_private_message():
    assert protocol.parse({"message": "/pm bob hello there"}) == protocol.SendPrivate(
        to="bob", message="hello there"
    )
    assert code_of({"message": "/pm bob"}) == "invalid_payload"
    assert code_of({"message": "/pm"}) == "invalid_payload"
    # "/pmx" is not the command: it is an ordinary message
    assert protocol.parse({"message": "/pmx y"}) == protocol.SendMessage("/pmx y")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            {"type": "private_message", "to": "bob", "message": "m"},
            protocol.SendPrivate("bob", "m"),
        ),
        ({"type": "edit_message", "id": 3, "message": "m"}, protocol.EditMessage(3, "m")),
        ({"type": "delete_message", "id": 3}, protocol.DeleteMessage(3)),
        ({"type": "reaction", "id": 3, "emoji": "👍"}, protocol.React(3, "👍")),
        ({"type": "typing"}, protocol.Typing()),
        ({"type": "history", "before": 9, "limit": 20}, protocol.History(9, 20)),
        ({"type": "history"}, protocol.History(None, 50)),
        ({"type": "resume", "after": 0}, protocol.Resume(0)),
        ({"type": "resume", "after": 3, "private_after": 0}, protocol.Resume(3, 0)),
        ({"type": "ping"}, protocol.Ping()),
    ],
)
def test_each_type_parses(content, expected):
    assert protocol.parse(content) == expected


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ([], "invalid_payload"),
        ("text", "invalid_payload"),
        ({}, "invalid_payload"),
        ({"type": 5}, "invalid_payload"),
        ({"type": "dance"}, "unknown_type"),
        ({"type": "chat_message"}, "invalid_payload"),
        ({"type": "chat_message", "message": 7}, "invalid_payload"),
        ({"type": "chat_message", "message": "   \n"}, "empty_message"),
        ({"type": "chat_message", "message": ""}, "empty_message"),
        ({"type": "chat_message", "message": "x" * 2001}, "message_too_long"),
        ({"type": "chat_message", "message": "a\x00b"}, "invalid_payload"),
        ({"type": "chat_message", "message": "\ud800"}, "invalid_payload"),
        ({"type": "private_message", "message": "m"}, "invalid_payload"),
        ({"type": "private_message", "to": "", "message": "m"}, "invalid_payload"),
        ({"type": "edit_message", "id": "3", "message": "m"}, "invalid_payload"),
        ({"type": "edit_message", "id": True, "message": "m"}, "invalid_payload"),
        ({"type": "edit_message", "id": 0, "message": "m"}, "invalid_payload"),
        ({"type": "edit_message", "id": 2**63, "message": "m"}, "invalid_payload"),
        ({"type": "edit_message", "id": 1, "message": ""}, "empty_message"),
        ({"type": "delete_message"}, "invalid_payload"),
        ({"type": "reaction", "id": 1, "emoji": ""}, "invalid_payload"),
        ({"type": "reaction", "id": 1, "emoji": "x" * 17}, "invalid_payload"),
        ({"type": "reaction", "id": 1, "emoji": "a b"}, "invalid_payload"),
        ({"type": "history", "limit": 101}, "invalid_payload"),
        ({"type": "history", "limit": 0}, "invalid_payload"),
        ({"type": "history", "before": -1}, "invalid_payload"),
        ({"type": "resume"}, "invalid_payload"),
        ({"type": "resume", "after": -1}, "invalid_payload"),
        ({"type": "resume", "after": 1, "private_after": "x"}, "invalid_payload"),
    ],
)
def test_errors(content, code):
    assert code_of(content) == code


def test_length_limit_follows_setting(settings):
    settings.CHAT_MAX_MESSAGE_LENGTH = 5
    assert protocol.parse({"message": "12345"}) == protocol.SendMessage("12345")
    assert code_of({"message": "123456"}) == "message_too_long"


def test_length_counts_characters_not_bytes(settings):
    settings.CHAT_MAX_MESSAGE_LENGTH = 3
    assert protocol.parse({"message": "测试🙂"}) == protocol.SendMessage("测试🙂")
