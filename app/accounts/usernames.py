"""Look-alike usernames: each user's name keys (chat.names) in UsernameKey.

Every save of a user that may change the username goes through two signals: before it,
a name that looks like another user's is refused (UsernameTaken, an IntegrityError, so
`get_or_create` and transactions treat it as the constraint it stands for); after it, the
key row is written. The row's unique columns are what make this race-safe: of two
look-alike sign-ups at the same moment, the second key insert fails, and inside a
transaction (the sign-up form, the admin) its user is rolled back with it. A save with
`update_fields` that leaves out the username (a login's last_login) costs no query.

Bulk creations skip signals: they call `bulk_keys` themselves (create_users).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import IntegrityError
from django.db.models import Q
from django.db.models.signals import post_save, pre_save

from chat.names import lookalike_detail, name_key, name_skeleton

from .models import UsernameKey

log = logging.getLogger(__name__)


class UsernameTaken(IntegrityError):
    def __init__(self, username: str, existing: str):
        detail = lookalike_detail(username, existing)
        super().__init__(
            f"Username {username!r}{detail} looks like the existing user {existing!r}."
        )
        self.username = username
        self.existing = existing


def keys(username: str) -> tuple[str, str]:
    return name_key(username), name_skeleton(username)


def _holder(pair: tuple[str, str], exclude_pk: int | None) -> str | None:
    rows = UsernameKey.objects.filter(Q(key=pair[0]) | Q(skeleton=pair[1]))
    if exclude_pk is not None:
        rows = rows.exclude(user_id=exclude_pk)
    return rows.values_list("username", flat=True).first()


def looking_like(username: str, *, exclude_pk: int | None = None) -> str | None:
    """The name of another user whose username looks like `username`, if any."""
    return _holder(keys(username), exclude_pk)


def is_reserved(username: str) -> bool:
    """Names no one may sign up with: look-alikes of the system author of pushed messages."""
    system = keys(settings.CHAT_SYSTEM_USERNAME)
    return any(a == b for a, b in zip(keys(username), system, strict=True))


def _before_save(sender, instance, raw=False, update_fields=None, **kwargs) -> None:
    instance._username_keys = None
    if raw or (update_fields is not None and "username" not in update_fields):
        return
    username = instance.get_username()
    has_row = False
    if not instance._state.adding and instance.pk is not None:
        stored = UsernameKey.objects.filter(user_id=instance.pk).values_list("username")
        row = stored.first()
        if row is not None and row[0] == username:
            return
        has_row = row is not None
    pending = keys(username)
    existing = _holder(pending, instance.pk)
    if existing is not None:
        if instance._state.adding or has_row:
            raise UsernameTaken(username, existing)
        # A user made without the signals (a bulk insert, a replica of the release before
        # the keys): what it is called now may not be a rename, so it is not refused; like
        # the look-alikes migration 0003 found, it keeps its name and reserves nothing.
        log.warning("user %r looks like %r: stored without username keys", username, existing)
        pending = (None, None)
    instance._username_keys = pending


def _after_save(sender, instance, raw=False, **kwargs) -> None:
    pending = instance.__dict__.pop("_username_keys", None)
    if pending is not None:
        key, skeleton = pending
        UsernameKey.objects.update_or_create(
            user_id=instance.pk,
            defaults={"key": key, "skeleton": skeleton, "username": instance.get_username()},
        )


def connect() -> None:
    model = settings.AUTH_USER_MODEL
    pre_save.connect(_before_save, sender=model, dispatch_uid="accounts.username_keys.pre")
    post_save.connect(_after_save, sender=model, dispatch_uid="accounts.username_keys.post")


def bulk_keys(usernames: Iterable[str]) -> dict[str, tuple[str, str]]:
    """The keys of each new username, or UsernameTaken when one looks like an existing
    user's or another of them."""
    found: dict[str, tuple[str, str]] = {}
    by_key: dict[str, str] = {}
    by_skeleton: dict[str, str] = {}
    for username in usernames:
        key, skeleton = found[username] = keys(username)
        other = by_key.setdefault(key, username)
        other = other if other != username else by_skeleton.setdefault(skeleton, username)
        if other != username:
            raise UsernameTaken(username, other)
    pairs = list(found.values())
    for start in range(0, len(pairs), 500):
        chunk = pairs[start : start + 500]
        rows = UsernameKey.objects.filter(
            Q(key__in=[k for k, _ in chunk]) | Q(skeleton__in=[s for _, s in chunk])
        )
        for key, skeleton, existing in rows.values_list("key", "skeleton", "username")[:1]:
            raise UsernameTaken(by_key.get(key) or by_skeleton[skeleton], existing)
    return found
