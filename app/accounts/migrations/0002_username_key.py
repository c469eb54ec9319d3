"""UsernameKey: the look-alike keys of each username (chat.names), each unique.

0003 fills it for the users that exist (a separate migration: on PostgreSQL, rows written
in the transaction that created a table with deferred foreign keys block its last index).
"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="UsernameKey",
            fields=[
                (
                    "user",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="username_key",
                        serialize=False,
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                ("key", models.CharField(max_length=200, null=True, unique=True)),
                ("skeleton", models.CharField(max_length=200, null=True, unique=True)),
                ("username", models.CharField(max_length=150)),
            ],
        ),
    ]
