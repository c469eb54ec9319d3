"""Room-name rules, the look-alike key of names, and channel-layer group names.

Group names must match ^[a-zA-Z0-9_.-]{1,99}$, so they are built from database ids
only, never from what a user typed (a room called 测试 or a user called a@b is fine).

Two room names, or two usernames, look alike when they share a `name_key` (the same but
for case and look-alike characters: `lobby`, `LOBBY`, `ｌｏｂｂｙ` fullwidth, `lоbby` with a
Cyrillic о, `1obby`) or a `name_skeleton` (confusable as written: `AIice` with a capital I
and `Alice`). Both are stored in unique columns (Room.name_key/name_skeleton,
accounts.UsernameKey.key/skeleton), so the database itself refuses a second name that
looks like the first, even in a race.
"""

from __future__ import annotations

import functools
import hashlib
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


# A key longer than this is stored as its SHA-256 (a "#" and 64 hex digits), so that the
# unique index stays small whatever a name expands to (NFKC turns U+FDFA into 18 letters).
NAME_KEY_MAX = 200


@functools.cache
def _spoof_checker():
    # ICU (pyicu-wheels bundles it): its skeleton is UTS #39's, on ICU's confusables table.
    # Imported on first use, so processes that never create a name do not load it.
    import icu

    return icu.SpoofChecker()


def _skeleton(text: str) -> str:
    """UTS #39 skeleton: NFD, Default_Ignorable characters removed, confusables mapped."""
    return _spoof_checker().getSkeleton(0, text)


def _bounded(key: str) -> str:
    return key if len(key) <= NAME_KEY_MAX else "#" + hashlib.sha256(key.encode()).hexdigest()


def name_key(name: str) -> str:
    """The key two names share when they are the same but for case and look-alikes.

    NFKC (fullwidth and compatibility forms), case folding, NFKC again (folding can undo
    it), then the UTS #39 skeleton (look-alikes of other scripts mapped to one prototype,
    invisible characters dropped): `LOBBY`, `ｌｏｂｂｙ` and `lоbby` all give `lobby`.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return _bounded(unicodedata.normalize("NFC", _skeleton(folded)))


def name_skeleton(name: str) -> str:
    """The UTS #39 skeleton of the name as written, case kept.

    What case folding first would miss: a capital I looks like a small l, so `PayPaI`
    and `PayPal` share this key though not `name_key` (`paypai`, `paypal`).
    """
    skeleton = _skeleton(unicodedata.normalize("NFKC", name))
    return _bounded(unicodedata.normalize("NFC", skeleton))


def lookalike_detail(name: str, existing: str, *, limit: int = 3) -> str:
    """What sets `name` apart from the `existing` one it looks like, since on screen the
    two may be the same: " (with U+043E CYRILLIC SMALL LETTER O)", or "" when only case
    differs. Characters outside ASCII are named first: they are the ones people miss."""
    if name.casefold() == existing.casefold():
        return ""
    new = [c for c in dict.fromkeys(name) if c not in existing]
    odd = [c for c in new if not c.isascii()] or new
    shown = ", ".join(f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed')}" for c in odd[:limit])
    return f" (with {shown}{', …' if len(odd) > limit else ''})"


def room_group(room_id: int) -> str:
    return f"chat.room.{room_id}"


def user_inbox(user_id: int) -> str:
    return f"chat.user.{user_id}"
