"""Fill UsernameKey (0002) for the users that exist.

Existing users get their key oldest first. A user whose name already looks like an older
user's (`ALICE` beside `alice`) keeps the account, with no keys (NULL, which the unique
index allows more than once): it reserves nothing, and nobody is renamed or locked out.
Each such user is logged as a warning.
"""

import logging

from django.conf import settings
from django.db import migrations

from chat.names import name_key, name_skeleton

log = logging.getLogger("accounts.migrations")
BATCH = 1000


def fill_keys(apps, schema_editor):
    User = apps.get_model(settings.AUTH_USER_MODEL)
    UsernameKey = apps.get_model("accounts", "UsernameKey")
    db = schema_editor.connection.alias
    keys: dict[str, str] = {}
    skeletons: dict[str, str] = {}
    rows = []
    users = User.objects.using(db).order_by("pk").values_list("pk", "username")
    for pk, username in users.iterator(chunk_size=BATCH):
        key, skeleton = name_key(username), name_skeleton(username)
        older = keys.get(key) or skeletons.get(skeleton)
        if older is not None:
            log.warning(
                "user %r (id %s) looks like the older user %r: left without username keys",
                username,
                pk,
                older,
            )
            key = skeleton = None
        else:
            keys[key] = skeletons[skeleton] = username
        rows.append(UsernameKey(user_id=pk, key=key, skeleton=skeleton, username=username))
        if len(rows) >= BATCH:
            UsernameKey.objects.using(db).bulk_create(rows)
            rows = []
    UsernameKey.objects.using(db).bulk_create(rows)


def drop_keys(apps, schema_editor):
    apps.get_model("accounts", "UsernameKey").objects.using(schema_editor.connection.alias).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_username_key"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(fill_keys, drop_keys, elidable=True),
    ]
