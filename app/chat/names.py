"""Room-name rules and channel-layer group names.

Group names must match ^[a-zA-Z0-9_.-]{1,99}$, so they are built from database ids
only, never from what a user typed (a room called 测试 or a user called a@b is fine).
"""

from __future__ import annotations

import re
import unicodedata

ROOM_NAME_MAX = 64
# \w is Unicode-aware: letters and digits of any script, plus "_".
_ROOM_NAME = re.compile(rf"[\w-]{{1,{ROOM_NAME_MAX}}}")
ROOM_NAME_RULE = f"1–{ROOM_NAME_MAX} letters (any script), digits, '_' or '-'"


def normalize_room_name(raw: str) -> str | None:
    """The canonical (NFC) form of a valid room name, or None when it breaks the rule."""
    name = unicodedata.normalize("NFC", raw)
    return name if _ROOM_NAME.fullmatch(name) else None


def room_group(room_id: int) -> str:
    return f"chat.room.{room_id}"


def user_inbox(user_id: int) -> str:
    return f"chat.user.{user_id}"
