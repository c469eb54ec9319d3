import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chat.models import Room


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
            user, _ = User.objects.get_or_create(username=name)
            if not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
        Room.objects.get_or_create(name="lobby")
        self.stdout.write(self.style.SUCCESS(f"Demo users: alice and bob, password: {password}"))
