"""Fill Room.name_key and Room.name_skeleton (0002) for the rooms that exist.

Existing rooms get their key oldest first. A room whose name already looks like an older
room's (`Lobby` beside `lobby`) keeps working under its own name with no keys (NULL, which
the unique index allows more than once): it reserves nothing, and nothing is renamed or
lost. Each such room is logged as a warning.
"""

import logging

from django.db import migrations

from chat.names import name_key, name_skeleton

log = logging.getLogger("chat.migrations")


def fill_keys(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    db = schema_editor.connection.alias
    keys: dict[str, str] = {}
    skeletons: dict[str, str] = {}
    for room in Room.objects.using(db).order_by("id").only("id", "name").iterator():
        key, skeleton = name_key(room.name), name_skeleton(room.name)
        older = keys.get(key) or skeletons.get(skeleton)
        if older is not None:
            log.warning(
                "room %r (id %s) looks like the older room %r: left without name keys",
                room.name,
                room.id,
                older,
            )
            continue
        keys[key] = skeletons[skeleton] = room.name
        Room.objects.using(db).filter(id=room.id).update(name_key=key, name_skeleton=skeleton)


def drop_keys(apps, schema_editor):
    Room = apps.get_model("chat", "Room")
    Room.objects.using(schema_editor.connection.alias).update(name_key=None, name_skeleton=None)


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0002_room_name_key"),
    ]

    operations = [
        migrations.RunPython(fill_keys, drop_keys, elidable=True),
    ]
