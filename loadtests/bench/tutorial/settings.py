"""Settings of the tutorial floor: what the tutorial configures, from the environment."""

import os

import environ

env = environ.Env()

SECRET_KEY = "benchmark-only-tutorial-floor"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "daphne",
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "tutorial",
]
ROOT_URLCONF = "tutorial.urls"
ASGI_APPLICATION = "tutorial.asgi.application"
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 60
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [os.environ["REDIS_URL"]]},
    }
}
LOGGING = {"version": 1, "root": {"level": "WARNING"}}
