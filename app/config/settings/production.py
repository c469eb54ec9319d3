"""Production: DEBUG off, secrets required, hashed static files served by nginx."""

from .base import *  # noqa: F403
from .base import env

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "config.staticfiles.ManifestStorage"},
}

# Set when the public side of nginx (or the load balancer in front of it) speaks HTTPS.
HTTPS = env.bool("HTTPS", default=False)
SESSION_COOKIE_SECURE = HTTPS
CSRF_COOKIE_SECURE = HTTPS
SECURE_SSL_REDIRECT = False  # TLS terminates in front of nginx; redirecting is its job.
if HTTPS:
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=3600)
