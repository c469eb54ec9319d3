import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from chat.models import Room


class Command(BaseCommand):
    help = (
        "Create the demo users alice and bob (password from DEMO_PASSWORD, or generated) "
        "and the room 'lobby'."
    )

    def handle(self, *args, **options):
        User = get_user_model()
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(9)
        for name in ("alice", "bob"):
            user, _ = User.objects.get_or_create(username=name)
            user.set_password(password)
            user.save()
        Room.objects.get_or_create(name="lobby")
        self.stdout.write(self.style.SUCCESS(f"Demo users: alice and bob, password: {password}"))
