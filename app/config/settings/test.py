"""Test runs against real PostgreSQL and Redis.

Unless DATABASE_URL is given, importing these settings starts a throwaway PostgreSQL
and Redis for this process (temp dir, free ports; stopped at exit) and exports their
URLs, so child processes a test starts (daphne, gunicorn) share them.
"""

import os

if "DATABASE_URL" not in os.environ:
    from localstack.servers import start_test_services

    os.environ.update(start_test_services())

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
