"""The chat's wire protocol in one package; docs/protocol.md describes the same.

- inbound.py: what clients send, parsed into typed commands, and its limits;
- frames.py: every frame the server sends, each built by one function;
- errors.py: error codes with their HTTP statuses (ChatError);
- closes.py: every WebSocket close code with its meaning;
- versions.py: protocol versions (`?v=N`).

The names the rest of the code uses are importable from here.
"""

from __future__ import annotations

from . import closes, frames, inbound, versions
from .errors import ChatError, unexpected
from .frames import (
    history_frame,
    legacy_presence_frames,
    pong_frame,
    presence_frame,
    private_history_frame,
    user_list_frame,
)
from .inbound import (
    MAX_FRAME_BYTES,
    MAX_ID,
    Command,
    DeleteMessage,
    EditMessage,
    History,
    Ping,
    React,
    Resume,
    SendMessage,
    SendPrivate,
    Typing,
    UserList,
    client_id,
    decode,
    frame_type,
    message_text,
    parse,
)
from .versions import DEFAULT_VERSION, LATEST, VERSIONS, version

__all__ = [
    "DEFAULT_VERSION",
    "LATEST",
    "MAX_FRAME_BYTES",
    "MAX_ID",
    "VERSIONS",
    "ChatError",
    "Command",
    "DeleteMessage",
    "EditMessage",
    "History",
    "Ping",
    "React",
    "Resume",
    "SendMessage",
    "SendPrivate",
    "Typing",
    "UserList",
    "client_id",
    "closes",
    "decode",
    "frame_type",
    "frames",
    "history_frame",
    "inbound",
    "legacy_presence_frames",
    "message_text",
    "parse",
    "pong_frame",
    "presence_frame",
    "private_history_frame",
    "unexpected",
    "user_list_frame",
    "version",
    "versions",
]
