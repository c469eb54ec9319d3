from django.core.management.base import BaseCommand, CommandError

from chat.models import Room
from chat.names import ROOM_NAME_RULE, normalize_room_name


class Command(BaseCommand):
    help = "Create a room, or update its staff-only flag if it exists."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--staff-only", action="store_true", help="Only staff may use it.")

    def handle(self, *args, name: str, staff_only: bool, **options):
        clean = normalize_room_name(name)
        if clean is None:
            raise CommandError(f"{name!r} is not a valid room name: use {ROOM_NAME_RULE}.")
        room, created = Room.objects.update_or_create(
            name=clean, defaults={"staff_only": staff_only}
        )
        kind = "staff-only" if room.staff_only else "public"
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} {kind} room {room.name!r} (id {room.pk}).")
