"""Django's `migrate`, run under a PostgreSQL advisory lock.

Two releases applied close together, a Job retried while its first pod still runs, or a
person running `migrate` by hand beside the Job would otherwise apply the same migration
twice at once. The second run waits for the lock, then finds nothing left to do.
The lock is session-level: it needs a direct connection (or PgBouncer in session mode).
"""

from __future__ import annotations

import hashlib
import time

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as MigrateCommand
from django.db import connections

# One 64-bit key for this project's schema changes (advisory locks are per database).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"chatstack.migrate").digest()[:8], "big", signed=True)
POLL_SECONDS = 1.0


class Command(MigrateCommand):
    help = MigrateCommand.help + " Holds a PostgreSQL advisory lock while it runs."

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            return super().handle(*args, **options)
        self._acquire(connection, settings.CHAT_MIGRATE_LOCK_TIMEOUT)
        try:
            return super().handle(*args, **options)
        finally:
            if connection.connection is not None:  # a lost connection has released it already
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])

    def _acquire(self, connection, timeout: float) -> None:
        started = time.monotonic()
        said = False
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY])
                if cursor.fetchone()[0]:
                    if said:
                        waited = time.monotonic() - started
                        self.stdout.write(f"Migration lock taken after {waited:.1f} s.")
                    return
            waited = time.monotonic() - started
            if waited >= timeout:
                raise CommandError(
                    f"Another migrate has held the migration lock for {timeout:.0f} s "
                    f"(pg_advisory_lock key {LOCK_KEY}); giving up. Check for a stuck "
                    "migration in pg_stat_activity, or raise CHAT_MIGRATE_LOCK_TIMEOUT."
                )
            if not said:
                self.stdout.write("Another migrate holds the migration lock; waiting for it…")
                said = True
            time.sleep(POLL_SECONDS)
