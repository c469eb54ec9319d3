"""Stored chat data. Presence is not here: it lives in Redis (or memory) with a TTL."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from .names import NAME_KEY_MAX, name_key, name_skeleton


class Room(models.Model):
    name = models.CharField(max_length=64, unique=True)
    # names.name_key(name) and names.name_skeleton(name), kept by save(): a second room
    # that looks like this one (case, fullwidth, another script's look-alike letters)
    # cannot be stored. NULL (a unique column holds any number of them) only on a room
    # that already looked like an older one when the keys were introduced (migration
    # 0003): it keeps working under its own name but reserves nothing.
    name_key = models.CharField(  # noqa: DJ001
        max_length=NAME_KEY_MAX, unique=True, null=True, editable=False
    )
    name_skeleton = models.CharField(  # noqa: DJ001
        max_length=NAME_KEY_MAX, unique=True, null=True, editable=False
    )
    staff_only = models.BooleanField(
        default=False, help_text="Only staff users can open, read or post in this room."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        if self._name_changed():
            self.name_key, self.name_skeleton = name_key(self.name), name_skeleton(self.name)
            update_fields = kwargs.get("update_fields")
            if update_fields is not None and "name" in update_fields:
                kwargs["update_fields"] = {*update_fields, "name_key", "name_skeleton"}
        super().save(*args, **kwargs)
        if "name" in self.__dict__:
            self._stored_name = self.name

    @classmethod
    def from_db(cls, db, field_names, values):
        room = super().from_db(db, field_names, values)
        room._stored_name = room.__dict__.get("name")
        return room

    def _name_changed(self) -> bool:
        if "name" not in self.__dict__:  # deferred: not being changed
            return False
        return self._state.adding or self.name != getattr(self, "_stored_name", None)

    @classmethod
    def looking_like(cls, name: str, *, exclude_pk: int | None = None) -> Room | None:
        """The room whose name looks like `name` (its own name excepted), if any."""
        rooms = cls.objects.filter(
            models.Q(name_key=name_key(name)) | models.Q(name_skeleton=name_skeleton(name))
        ).exclude(name=name)
        if exclude_pk is not None:
            rooms = rooms.exclude(pk=exclude_pk)
        return rooms.first()

    def clean(self) -> None:
        super().clean()
        if self.name and self._name_changed():
            other = Room.looking_like(self.name, exclude_pk=self.pk)
            if other is not None:
                raise ValidationError({"name": f"Looks like the existing room {other.name!r}."})


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_messages"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # Soft delete: the row stays for moderation and audit, but leaves every history.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["room", "id"], name="chat_message_room_id")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.user_id} in {self.room_id}: {self.body[:40]}"


class PrivateMessage(models.Model):
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sent_private_messages"
    )
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="received_private_messages",
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["recipient", "id"], name="chat_pm_recipient_id"),
            models.Index(fields=["sender", "id"], name="chat_pm_sender_id"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.sender_id} -> {self.recipient_id}: {self.body[:40]}"


class Reaction(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="reactions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="chat_reactions"
    )
    emoji = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "user", "emoji"], name="chat_reaction_once_per_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.emoji} by {self.user_id} on {self.message_id}"
