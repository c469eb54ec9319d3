import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.usernames import UsernameTaken
from chat.protocol.errors import ChatError
from chat.services import rooms


class Command(BaseCommand):
    help = (
        "Create the demo users alice and bob and the room 'lobby'. The password comes "
        "from DEMO_PASSWORD, or is generated once and kept in CHAT_DATA_DIR/demo-password."
    )

    def _password(self) -> str:
        given = os.environ.get("DEMO_PASSWORD")
        if given:
            return given
        # Reused across restarts: a new password would log every open page out.
        saved = settings.DATA_DIR / "demo-password"
        if saved.exists():
            return saved.read_text().strip()
        password = secrets.token_urlsafe(9)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(password)
        saved.chmod(0o600)
        return password

    def handle(self, *args, **options):
        User = get_user_model()
        password = self._password()
        for name in ("alice", "bob"):
            try:
                user, _ = User.objects.get_or_create(username=name)
            except UsernameTaken as exc:  # someone signed up as a look-alike first
                raise CommandError(str(exc)) from None
            if not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
        try:
            rooms.create_room("lobby")
        except ChatError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(self.style.SUCCESS(f"Demo users: alice and bob, password: {password}"))
