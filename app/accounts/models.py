"""API tokens for non-browser clients (only a SHA-256 of each token is stored), and the
look-alike key of each username."""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models

from chat.names import NAME_KEY_MAX

TOKEN_BYTES = 32


def hash_token(token: str) -> str:
    # Tokens carry 256 random bits, so a fast unsalted hash is enough: there is nothing
    # to brute-force, and a lookup stays one indexed query.
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


class ApiToken(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    key_hash = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=8, help_text="First characters, to tell tokens apart.")
    name = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @classmethod
    def issue(cls, user, name: str = "") -> tuple[ApiToken, str]:
        """Create a token for `user`; the plain token is returned once and never stored."""
        token = new_token()
        row = cls.objects.create(user=user, key_hash=hash_token(token), prefix=token[:8], name=name)
        return row, token


class UsernameKey(models.Model):
    """A user's username keys (chat.names.name_key, name_skeleton), each unique: look-alike
    usernames cannot coexist (`аlice` with a Cyrillic а beside `alice`, `ALICE`, `AIice`).

    Django's User cannot take a column, so the key lives here, one row per user, kept in
    step by accounts.usernames (signals on every user save that may change the username;
    bulk creations write it themselves). `key` is NULL only for a user whose name already
    looked like an older user's when the key was introduced (migration 0002): that user
    keeps the account and reserves nothing (`skeleton` is NULL with it).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="username_key",
    )
    # NULL, not "": a unique column holds any number of NULLs, and "no key" is what it is.
    key = models.CharField(max_length=NAME_KEY_MAX, unique=True, null=True)  # noqa: DJ001
    skeleton = models.CharField(max_length=NAME_KEY_MAX, unique=True, null=True)  # noqa: DJ001
    # The username the key was computed from: a save that leaves it as it is costs nothing.
    username = models.CharField(max_length=150)

    def __str__(self) -> str:
        return f"{self.username} → {self.key}"
