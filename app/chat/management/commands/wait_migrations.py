"""Wait until the database schema is this release's: what `migrate --check` would pass.

The initContainer of web and ws runs it (`entrypoint.py wait-migrations`), so a new pod
never serves on a schema its code does not know while the migrate Job is still running.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

POLL_SECONDS = 2.0


def pending_migrations(database: str = DEFAULT_DB_ALIAS) -> list[str]:
    """`app.name` of each migration this code has and the database has not applied."""
    connection = connections[database]
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _ in plan]


class Command(BaseCommand):
    help = "Wait until every migration of this code is applied; exit 1 after --timeout."

    def add_arguments(self, parser):
        parser.add_argument(
            "--timeout",
            type=float,
            default=settings.CHAT_MIGRATE_WAIT_TIMEOUT,
            help="seconds to wait (CHAT_MIGRATE_WAIT_TIMEOUT)",
        )
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, timeout: float, database: str, **options):
        started = time.monotonic()
        last = None
        while True:
            try:
                pending = pending_migrations(database)
                state = "pending: " + ", ".join(pending) if pending else ""
            except DatabaseError as exc:
                connections[database].close()
                pending, state = None, f"database unreachable ({type(exc).__name__})"
            if pending == []:
                self.stdout.write("Schema is up to date.")
                return
            if state != last:
                self.stdout.write(f"Waiting for migrations: {state}")
                last = state
            if time.monotonic() - started >= timeout:
                raise CommandError(
                    f"Migrations still not applied after {timeout:.0f} s ({state}): "
                    "is the migrate Job running? (kubectl logs job/migrate)"
                )
            time.sleep(POLL_SECONDS)
