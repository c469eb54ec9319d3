"""`migrate` under an advisory lock, and `wait_migrations` (the init containers' role)."""

from __future__ import annotations

import io
import threading

import psycopg
import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.db.migrations.recorder import MigrationRecorder

from chat.management.commands.migrate import LOCK_KEY
from localstack.servers import wait_until


def other_session() -> psycopg.Connection:
    db = django_settings.DATABASES["default"]
    return psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    )


@pytest.mark.django_db(transaction=True)
def test_a_second_migrate_waits_for_the_first_then_finds_nothing_to_do():
    out = io.StringIO()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call_command("migrate", "--noinput", stdout=out, verbosity=1)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            from django.db import connection as thread_connection

            thread_connection.close()

    with other_session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        second = threading.Thread(target=run)
        second.start()
        wait_until(lambda: "waiting" in out.getvalue(), 10, "migrate to wait for the lock")
        second.join(1.5)
        assert second.is_alive(), "migrate ran while another held the lock"
        holder.execute("SELECT pg_advisory_unlock(%s)", [LOCK_KEY])
        second.join(30)
    assert not second.is_alive() and not errors, errors
    assert "Migration lock taken" in out.getvalue()
    assert "No migrations to apply" in out.getvalue()
    # Released afterwards: another session takes it at once.
    with other_session() as check:
        assert check.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_migrate_gives_up_with_a_clear_error_when_the_lock_stays_taken(settings):
    settings.CHAT_MIGRATE_LOCK_TIMEOUT = 1.5
    with other_session() as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        with pytest.raises(CommandError, match="held the migration lock for 2 s"):
            call_command("migrate", "--noinput", stdout=io.StringIO())


@pytest.mark.django_db
def test_wait_migrations_returns_at_once_on_an_up_to_date_schema():
    out = io.StringIO()
    call_command("wait_migrations", "--timeout", "5", stdout=out)
    assert out.getvalue().strip() == "Schema is up to date."


@pytest.mark.django_db
def test_wait_migrations_names_what_is_pending_and_times_out():
    # Inside the test's transaction: rolled back afterwards. The newest one: an applied
    # migration with applied children is not what the plan looks at.
    (_, latest) = MigrationLoader(connection).graph.leaf_nodes("chat")[0]
    MigrationRecorder(connection).record_unapplied("chat", latest)
    out = io.StringIO()
    with pytest.raises(CommandError, match=rf"still not applied after 1 s .*chat\.{latest}"):
        call_command("wait_migrations", "--timeout", "1", stdout=out)
    assert f"Waiting for migrations: pending: chat.{latest}" in out.getvalue()
