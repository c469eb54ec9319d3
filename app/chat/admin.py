from django.contrib import admin

from .models import Message, PrivateMessage, Reaction, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("name", "staff_only", "created_at")
    list_filter = ("staff_only", "created_at")
    search_fields = ("name",)


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "user", "short_body", "created_at", "edited_at", "deleted_at")
    list_filter = ("room", "created_at", ("deleted_at", admin.EmptyFieldListFilter))
    search_fields = ("body", "user__username", "room__name")
    raw_id_fields = ("user", "room")
    date_hierarchy = "created_at"

    @admin.display(description="message")
    def short_body(self, obj: Message) -> str:
        return obj.body[:80]


@admin.register(PrivateMessage)
class PrivateMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "sender", "recipient", "created_at")
    list_filter = ("created_at",)
    search_fields = ("body", "sender__username", "recipient__username")
    raw_id_fields = ("sender", "recipient")
    date_hierarchy = "created_at"


@admin.register(Reaction)
class ReactionAdmin(admin.ModelAdmin):
    list_display = ("emoji", "user", "message", "created_at")
    list_filter = ("emoji", "created_at")
    search_fields = ("emoji", "user__username", "message__body")
    raw_id_fields = ("user", "message")
