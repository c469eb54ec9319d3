from django.core.management.base import BaseCommand, CommandError

from chat.names import ROOM_NAME_RULE, normalize_room_name
from chat.protocol.errors import ChatError
from chat.services import rooms


class Command(BaseCommand):
    help = "Create a room, or update its staff-only flag if it exists."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--staff-only", action="store_true", help="Only staff may use it.")

    def handle(self, *args, name: str, staff_only: bool, **options):
        clean = normalize_room_name(name)
        if clean is None:
            raise CommandError(f"{name!r} is not a valid room name: use {ROOM_NAME_RULE}.")
        try:
            room, created = rooms.create_room(clean, staff_only=staff_only)
        except ChatError as exc:  # looks like another room
            raise CommandError(exc.message) from None
        if not created and room.staff_only != staff_only:
            room.staff_only = staff_only
            room.save(update_fields=["staff_only"])
        kind = "staff-only" if room.staff_only else "public"
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} {kind} room {room.name!r} (id {room.pk}).")
