"""Test runs against real PostgreSQL and Redis, given as DATABASE_URL and REDIS_URL.

Like every layer, this one only reads the environment: importing it starts nothing.
Under pytest, tests/plugins/services.py starts a throwaway PostgreSQL and Redis first
(unless DATABASE_URL is given) and exports their URLs.
"""

import os

from django.core.exceptions import ImproperlyConfigured

if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured(
        "DATABASE_URL is not set: the test settings need a PostgreSQL (and REDIS_URL a "
        "Redis). Run the tests with pytest, whose tests/plugins/services.py starts both, "
        "or export the URLs of your own."
    )

os.environ.setdefault("DEBUG", "0")
# Presence frames go out quickly, so tests wait for them briefly.
os.environ.setdefault("CHAT_PRESENCE_INTERVAL", "0.02")
os.environ.setdefault("SECRET_KEY", "test-secret-key-not-for-production")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")

from .base import *  # noqa: F403

# Close connections after each unit of work, so the test database can be dropped at the end.
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
