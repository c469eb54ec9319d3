"""Create many users with tokens at once, for load tests.

Passwords are not hashed per user (that is what makes creating thousands slow): users
get one shared hash of --password, or an unusable password. Tokens are stored hashed.
"""

from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts import usernames
from accounts.models import ApiToken, UsernameKey, hash_token, new_token

BATCH = 1000


class Command(BaseCommand):
    help = "Create N users named <prefix><i> and write 'username token' lines to a file."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, required=True)
        parser.add_argument("--prefix", default="user")
        parser.add_argument("--tokens-out", required=True, help="File to write tokens to.")
        parser.add_argument("--start", type=int, default=1, help="First index (default 1).")
        parser.add_argument("--password", help="One password for all (hashed once).")

    def handle(self, *args, count, prefix, tokens_out, start, password, **options):
        if count < 1:
            raise CommandError("--count must be at least 1.")
        out = Path(tokens_out)
        if not out.parent.exists():
            raise CommandError(f"Directory {str(out.parent)!r} does not exist.")
        User = get_user_model()
        names = [f"{prefix}{i}" for i in range(start, start + count)]
        too_long = [n for n in names if len(n) > 150]
        if too_long:
            raise CommandError(f"Username {too_long[0][:40]!r}… is longer than 150 characters.")
        hashed = make_password(password)  # once, or an unusable password when None
        lines = []
        with transaction.atomic():
            existing = set(
                User.objects.filter(username__in=names).values_list("username", flat=True)
            )
            new = [n for n in names if n not in existing]
            try:  # bulk_create skips the signals that keep username keys: written below
                keys = usernames.bulk_keys(new)
            except usernames.UsernameTaken as exc:
                raise CommandError(str(exc)) from None
            User.objects.bulk_create(
                [User(username=n, password=hashed) for n in new], batch_size=BATCH
            )
            ids = dict(User.objects.filter(username__in=names).values_list("username", "id"))
            UsernameKey.objects.bulk_create(
                [
                    UsernameKey(user_id=ids[n], key=keys[n][0], skeleton=keys[n][1], username=n)
                    for n in new
                ],
                batch_size=BATCH,
            )
            tokens = []
            for name in names:
                token = new_token()
                lines.append(f"{name} {token}\n")
                tokens.append(
                    ApiToken(
                        user_id=ids[name],
                        key_hash=hash_token(token),
                        prefix=token[:8],
                        name="create_users",
                    )
                )
            ApiToken.objects.bulk_create(tokens, batch_size=BATCH)
        out.write_text("".join(lines))
        self.stdout.write(
            f"Created {count - len(existing)} users ({len(existing)} existed); "
            f"{count} tokens written to {out}."
        )
