"""Recompute the look-alike keys of every room name and username (chat.names).

The keys come from ICU's confusables table (pyicu-wheels) and Python's Unicode
normalization; an upgrade of either can change them. Run this after one, or after users
or rooms were made by a release that did not write keys (a rolling upgrade's old
replicas): it recomputes every key, oldest row first, and a row that looks like an older
one is left without keys (it keeps its name and reserves nothing), as migrations 0003
did. `--check` only reports.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import UsernameKey
from chat.models import Room
from chat.names import name_key, name_skeleton


def _plan(rows: list[tuple[int, str]]) -> tuple[dict[int, tuple], list[str]]:
    """Keys for each (id, name), oldest first; the names left without keys, with why."""
    keys: dict[str, str] = {}
    skeletons: dict[str, str] = {}
    wanted: dict[int, tuple] = {}
    left_out = []
    for pk, name in sorted(rows):
        key, skeleton = name_key(name), name_skeleton(name)
        older = keys.get(key) or skeletons.get(skeleton)
        if older is not None:
            wanted[pk] = (None, None)
            left_out.append(f"{name!r} looks like {older!r}")
        else:
            keys[key] = skeletons[skeleton] = name
            wanted[pk] = (key, skeleton)
    return wanted, left_out


class Command(BaseCommand):
    help = "Recompute the look-alike keys of room names and usernames (after an ICU upgrade)."

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="Report only; exit 1 if stale.")

    def handle(self, *args, check: bool, **options):
        with transaction.atomic():
            stale = self._rooms(check) + self._users(check)
            if check and stale:
                raise CommandError(f"{stale} stale name keys: run rebuild_name_keys.")
        self.stdout.write(f"{stale} name keys {'stale' if check else 'rewritten'}.")

    def _report(self, kind: str, left_out: list[str]) -> None:
        for line in left_out:
            self.stdout.write(f"{kind} {line}: left without keys")

    def _rooms(self, check: bool) -> int:
        rooms = Room.objects.select_for_update()
        current = {pk: (k, s) for pk, k, s in rooms.values_list("pk", "name_key", "name_skeleton")}
        wanted, left_out = _plan(list(Room.objects.values_list("pk", "name")))
        changed = {pk: keys for pk, keys in wanted.items() if current[pk] != keys}
        self._report("room", left_out)
        if changed and not check:
            # Cleared first: a key may move from one row to another.
            Room.objects.filter(pk__in=changed).update(name_key=None, name_skeleton=None)
            for pk, (key, skeleton) in changed.items():
                Room.objects.filter(pk=pk).update(name_key=key, name_skeleton=skeleton)
        return len(changed)

    def _users(self, check: bool) -> int:
        users = list(get_user_model().objects.values_list("pk", "username"))
        rows = UsernameKey.objects.select_for_update()
        current = {
            pk: (k, s, u) for pk, k, s, u in rows.values_list("pk", "key", "skeleton", "username")
        }
        wanted, left_out = _plan(users)
        names = dict(users)
        changed = {pk: keys for pk, keys in wanted.items() if current.get(pk) != (*keys, names[pk])}
        self._report("user", left_out)
        if changed and not check:
            UsernameKey.objects.filter(pk__in=changed).update(key=None, skeleton=None)
            for pk, (key, skeleton) in changed.items():
                UsernameKey.objects.update_or_create(
                    user_id=pk, defaults={"key": key, "skeleton": skeleton, "username": names[pk]}
                )
        return len(changed)
