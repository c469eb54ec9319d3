"""The images themselves: built from the offline base by docker-compose 1.29 (legacy
builder), non-root, labelled, health-checked, slim, one image for every role."""

from __future__ import annotations

import json
import subprocess

import pytest

from . import harness

MAX_APP_IMAGE_MB = 400  # base (157 MB with Python) + locked dependencies + app


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return harness.run(["docker", *args], check=check, quiet=True)


def config(ref: str) -> dict:
    return harness.inspect(ref)["Config"]


def run_image(image: str, *args: str, entrypoint: str | None = None, env: dict | None = None):
    cmd = [
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    for key, value in (env or {}).items():
        cmd += ["-e", f"{key}={value}"]
    if entrypoint:
        cmd += ["--entrypoint", entrypoint]
    return docker(*cmd, image, *args, check=False)


@pytest.fixture(scope="module")
def app(built_images) -> str:
    return built_images["app"]


def test_app_image_metadata(app):
    cfg = config(app)
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["/opt/venv/bin/python", "/srv/chatstack/app/entrypoint.py"]
    assert cfg["Cmd"] == ["web"]
    assert cfg["Healthcheck"]["Test"][0] == "CMD" and "/healthz" in " ".join(
        cfg["Healthcheck"]["Test"]
    )
    labels = cfg["Labels"]
    for key in ("title", "description", "licenses", "version", "revision", "created", "source"):
        assert f"org.opencontainers.image.{key}" in labels, key
    env = dict(item.split("=", 1) for item in cfg["Env"])
    # No secret is baked in: they come from the environment at run time.
    assert not {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "POSTGRES_PASSWORD"} & set(env)
    assert env["DJANGO_SETTINGS_MODULE"] == "config.settings.production"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", app).stdout
    assert "SECRET_KEY=" not in history


def test_app_image_is_small_and_has_no_build_tools(app):
    size_mb = harness.inspect(app)["Size"] / 1e6
    assert size_mb < MAX_APP_IMAGE_MB, f"{size_mb:.0f} MB"
    proc = run_image(
        app,
        "-c",
        "import os, shutil, sys; "
        "print(sys.version_info[:2], os.getuid(), shutil.which('pip'), shutil.which('uv'), "
        "os.path.exists('/build'), os.path.exists('/opt/uv'))",
        entrypoint="/opt/venv/bin/python",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("(3, ")[1].startswith(("11)", "12)", "13)"))
    assert proc.stdout.strip().endswith("10001 None None False False"), proc.stdout


def test_static_files_collected_at_build_time(app):
    proc = run_image(
        app,
        "/srv/chatstack/static/staticfiles.json",
        entrypoint="/bin/cat",
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout)["paths"]
    assert "chat/room.js" in manifest and manifest["chat/room.js"] != "chat/room.js"


def test_every_role_goes_through_the_entrypoint(app):
    env = {"SECRET_KEY": "image-test-only", "ALLOWED_HOSTS": "localhost"}
    # `manage`: any command, settings from the environment (SQLite in /tmp here).
    proc = run_image(app, "manage", "check", "--deploy", "--fail-level", "ERROR", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_image(app, "manage", "migrate", "--check", env=env)
    assert proc.returncode != 0  # a fresh database has unapplied migrations
    # Production settings refuse to start without their secrets, in one sentence.
    proc = run_image(app, "manage", "check")
    assert proc.returncode != 0 and "SECRET_KEY is not set" in proc.stderr
    proc = run_image(app, "bogus")
    assert proc.returncode != 0 and "usage: entrypoint.py" in proc.stderr


def test_nginx_image(built_images):
    ref = built_images["nginx"]
    cfg = config(ref)
    assert cfg["User"] == "10002:10002"
    assert cfg["Entrypoint"] == ["/etc/chat-nginx/nginx-start.sh"]
    assert cfg["StopSignal"] == "SIGQUIT"
    assert "org.opencontainers.image.title" in cfg["Labels"]
    # The configuration renders from the environment and nginx accepts it, as that user,
    # on a read-only root (upstream names must resolve: give them as addresses here).
    proc = run_image(
        ref,
        "-c",
        "/etc/chat-nginx/render.sh /tmp/conf && nginx -t -p /tmp/conf -c /tmp/conf/nginx.conf "
        "-e stderr && ls /srv/static/chat",
        entrypoint="/bin/sh",
        env={"CHAT_WEB_UPSTREAM": "127.0.0.1:8000", "CHAT_WS_UPSTREAM": "127.0.0.1:8001"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "room.js" in proc.stdout


def test_locust_image(built_images):
    ref = built_images["locust"]
    assert config(ref)["User"] == "10003:10003"
    proc = run_image(ref, "--version")
    assert proc.returncode == 0, proc.stderr
    assert "locust" in (proc.stdout + proc.stderr).lower()
    # The image has everything loadtests/locustfile.py imports (chatload, gevent, websocket).
    proc = run_image(
        ref,
        "-c",
        "import sys; sys.path.insert(0, '/srv/loadtests'); import locustfile; print('imported')",
        entrypoint="/opt/venv/bin/python",
    )
    assert proc.returncode == 0, proc.stderr
    assert "imported" in proc.stdout


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_test_only_data_store_images_run_as_their_own_user(built_images, name):
    assert config(built_images[name])["User"] == "999:999"
