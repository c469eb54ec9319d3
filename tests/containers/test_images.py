"""The images themselves: built from the offline base by docker-compose 1.29 (legacy
builder), non-root, labelled, health-checked, slim, one image for every role."""

from __future__ import annotations

import json
import re
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
        "-e stderr",
        entrypoint="/bin/sh",
        env={"CHAT_WEB_UPSTREAM": "127.0.0.1:8000", "CHAT_WS_UPSTREAM": "127.0.0.1:8001"},
    )
    assert proc.returncode == 0, proc.stderr


def test_nginx_image_has_nothing_of_the_app():
    """An app release leaves the nginx image as it was: its stage copies nothing from the
    app's stages (the web tier serves /static/ itself), only nginx/ and the start script."""
    text = (harness.REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    (nginx,) = [s for s in stages if s.split("\n", 1)[0].endswith(" AS nginx")]
    copies = [line for line in nginx.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY nginx/ compose/images/nginx-start.sh /etc/chat-nginx/"], copies


def test_nginx_image_has_no_static_files(built_images):
    proc = run_image(
        built_images["nginx"],
        "-c",
        'test ! -e "$CHAT_STATIC_ROOT" && ! find / -xdev -name "room.*.js" | grep .',
        entrypoint="/bin/sh",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# Settings of nginx/render.sh that only nginx itself can judge: names resolved at run time
# (nginx starts although they do not resolve yet), the connection budget (the worker's open
# file limit raised as the unprivileged user), the trusted proxies (the realip module is in
# the image's nginx). Each line: environment, then whether `nginx -t` accepts it.
NGINX_SETTINGS = [
    ("NGINX_RESOLVER=127.0.0.11 CHAT_WEB_UPSTREAM=web:8000 CHAT_WS_UPSTREAM=ws:8000", True),
    # Without a resolver the same names must resolve when nginx starts: here they cannot.
    ("CHAT_WEB_UPSTREAM=web:8000 CHAT_WS_UPSTREAM=ws:8000", False),
    (
        "NGINX_CONNECTION_BUDGET=4000 CHAT_WEB_UPSTREAM=127.0.0.1:1 CHAT_WS_UPSTREAM=127.0.0.1:2",
        True,
    ),
    (
        "NGINX_REAL_IP_FROM=10.0.0.0/8,fd00::/8 NGINX_RESOLVER=auto "
        "CHAT_WEB_UPSTREAM=web-pods.chat.svc.cluster.local:8000 CHAT_WS_UPSTREAM=ws:8000",
        True,
    ),
]


def test_nginx_accepts_the_run_time_settings(built_images):
    script = ["set -u", "n=0"]
    for env, _ in NGINX_SETTINGS:
        script.append(
            f"n=$((n + 1)); ( export {env}; /etc/chat-nginx/render.sh /tmp/c$n >/dev/null "
            f"&& nginx -t -q -p /tmp/c$n -c /tmp/c$n/nginx.conf -e stderr ) "
            '&& echo "$n ok" || echo "$n refused"'
        )
    script.append("grep -h worker_ /tmp/c3/nginx.conf")
    # The resolver is needed only for "auto": a resolv.conf with one nameserver.
    proc = run_image(built_images["nginx"], "-c", "\n".join(script), entrypoint="/bin/sh")
    assert proc.returncode == 0, proc.stderr
    verdicts = [line for line in proc.stdout.splitlines() if line.endswith(("ok", "refused"))]
    expected = [f"{i} {'ok' if ok else 'refused'}" for i, (_, ok) in enumerate(NGINX_SETTINGS, 1)]
    assert verdicts == expected, proc.stdout + proc.stderr[-3000:]
    assert "worker_connections 9024;" in proc.stdout
    assert "worker_rlimit_nofile 10048;" in proc.stdout


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
