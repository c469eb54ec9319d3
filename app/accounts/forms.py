"""The sign-up form: Django's, plus the look-alike rule for usernames (accounts.usernames)."""

from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm
from django.db import IntegrityError, transaction

from chat.names import lookalike_detail

from . import usernames


def lookalike_error(username: str, existing: str) -> forms.ValidationError:
    return forms.ValidationError(
        "This username%(detail)s looks too much like the existing user %(existing)s; pick another.",
        code="username_lookalike",
        params={"existing": existing, "detail": lookalike_detail(username, existing)},
    )


class SignupForm(UserCreationForm):
    def clean_username(self):
        username = super().clean_username()
        if username is None:  # Django's case check refused it already
            return None
        if usernames.is_reserved(username):
            raise forms.ValidationError("This username is reserved.", code="username_reserved")
        existing = usernames.looking_like(username)
        if existing is not None:
            raise lookalike_error(username, existing)
        return username

    def save(self, commit: bool = True):
        """The new user; None, with the reason on the form, if a look-alike (or the same
        name) was signed up between validation and now."""
        try:
            with transaction.atomic():
                return super().save(commit=commit)
        except usernames.UsernameTaken as exc:
            self.add_error("username", lookalike_error(exc.username, exc.existing))
        except IntegrityError:
            existing = usernames.looking_like(self.cleaned_data["username"])
            if existing is None:
                raise
            self.add_error("username", lookalike_error(self.cleaned_data["username"], existing))
        return None
