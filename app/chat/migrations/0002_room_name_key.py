"""Room.name_key and Room.name_skeleton: the look-alike keys of a room's name (chat.names),
each unique.

0003 fills it for the rooms that exist.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="room",
            name="name_key",
            field=models.CharField(editable=False, max_length=200, null=True, unique=True),
        ),
        migrations.AddField(
            model_name="room",
            name="name_skeleton",
            field=models.CharField(editable=False, max_length=200, null=True, unique=True),
        ),
    ]
