from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from chat import protocol, sync
from chat.models import Room
from chat.names import ROOM_NAME_RULE, normalize_room_name
from chat.protocol.errors import ChatError
from chat.services import messages, rooms


class Command(BaseCommand):
    help = "Store a message in a room and deliver it live to everyone there, on every replica."

    def add_arguments(self, parser):
        parser.add_argument("room")
        parser.add_argument("text")
        parser.add_argument("--as", dest="username", help="Author (default: the system user).")
        parser.add_argument(
            "--create", action="store_true", help="Create the room if it does not exist."
        )

    def handle(self, *args, room: str, text: str, username: str | None, create: bool, **opts):
        name = normalize_room_name(room)
        if name is None:
            raise CommandError(f"{room!r} is not a valid room name: use {ROOM_NAME_RULE}.")
        chat_room = Room.objects.filter(name=name).first()
        if chat_room is None:
            if not create:
                raise CommandError(f"Room {name!r} does not exist (add --create to create it).")
            try:
                chat_room, _ = rooms.create_room(name)
            except ChatError as exc:  # looks like another room
                raise CommandError(exc.message) from None
        if username:
            author = get_user_model().objects.filter(username=username).first()
            if author is None:
                raise CommandError(f"There is no user named {username!r}.")
        else:
            author = messages.store.system_user()
        try:
            body = protocol.message_text(text)
            payload = sync.call(messages.post, chat_room, author, body, rate_limited=False)
        except ChatError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"Message {payload['id']} delivered to {name!r} as {author.username}.")
