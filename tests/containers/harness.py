"""Images and compose stacks for the container tests, built with no registry.

The engine here has no images and cannot pull, and pip cannot reach the package index from
inside a build container. So: debootstrap a Debian bookworm base and `docker import` it
(compose/images/offline/base.sh), download the locked wheels on the host
(compose/images/offline/wheelhouse.py), build an nginx base from Debian's package, then
let compose build everything else through compose/compose.test.yaml, the test-only
override of the compose file users run.

Every step is cached under build/containers/ (git-ignored) or as an image, so a second
run only rebuilds what changed. Also a command line, for a person looking at the stack:

    .venv/bin/python -m tests.containers.harness up      # build, start, print the URL
    .venv/bin/python -m tests.containers.harness down    # stop and remove it all
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / "build" / "containers"
TOOLS = CACHE / "tools" / "bin"
CHECKOV = CACHE / "checkov" / "bin" / "checkov"
WHEELHOUSE = REPO / ".wheelhouse"
OFFLINE = REPO / "compose" / "images" / "offline"
COMPOSE_FILE = REPO / "compose" / "compose.yaml"
COMPOSE_TEST_FILE = REPO / "compose" / "compose.test.yaml"

BASE_IMAGE = "chatstack-offline/base:bookworm"
NGINX_BASE_IMAGE = "chatstack-test/nginx-base:bookworm"
TAG = "ctest"
IMAGES = {
    "app": f"chatstack-test/app:{TAG}",
    "nginx": f"chatstack-test/nginx:{TAG}",
    "locust": f"chatstack-test/locust:{TAG}",
    "postgres": f"chatstack-test/postgres:{TAG}",
    "redis": f"chatstack-test/redis:{TAG}",
}
# The next release of the app image (build_changed_app_image), for upgrade tests.
NEXT_APP_IMAGE = f"chatstack-test/app:{TAG}-next"
WS_REPLICAS = 3
PROJECT_PREFIX = "chatstack-ctest"

# The engine here is Docker 20.10 without BuildKit; say so, so that a newer CLI does not
# try buildx, and so that both compose tools use the classic builder.
DOCKER_ENV = {"DOCKER_BUILDKIT": "0", "COMPOSE_DOCKER_CLI_BUILD": "0"}


def log(message: str) -> None:
    print(f"[containers {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    cmd: list[str],
    *,
    timeout: float = 600,
    check: bool = True,
    env: dict[str, str] | None = None,
    cwd: Path = REPO,
    quiet: bool = False,
) -> subprocess.CompletedProcess:
    """Run a command, capture its output, and say what failed (with the output) if it did."""
    started = time.monotonic()
    full_env = {**os.environ, **DOCKER_ENV, **(env or {})}
    proc = subprocess.run(
        cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    took = time.monotonic() - started
    if not quiet or proc.returncode:
        log(f"{' '.join(str(c) for c in cmd)[:160]} -> {proc.returncode} in {took:.1f} s")
    if check and proc.returncode:
        tail = (proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]).strip()
        raise RuntimeError(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc


# --- images ------------------------------------------------------------------------------


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def image_id(ref: str) -> str | None:
    proc = run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check=False, quiet=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def base_image(timeout: float = 600) -> None:
    """The offline Debian base image (debootstrap + import, cached)."""
    run(["sh", str(OFFLINE / "base.sh"), BASE_IMAGE, str(CACHE)], timeout=timeout)


def redis_image(tool: str, project: str, workdir: Path) -> Compose:
    """The test-only Redis image (compose's `redis` service) built on the base; a Compose
    for `project` to run it."""
    base_image()
    compose = Compose(tool=[tool], project=project, workdir=workdir)
    compose("build", "--force-rm", "redis", timeout=900)
    return compose


def build_base_images(timings: dict[str, float]) -> None:
    """The offline base, the wheelhouse for it, and the nginx base (cached)."""
    started = time.monotonic()
    base_image(timeout=900)
    timings["base image (debootstrap + import)"] = time.monotonic() - started

    started = time.monotonic()
    stamp = WHEELHOUSE / ".stamp"
    key = f"{_digest(REPO / 'uv.lock', OFFLINE / 'wheelhouse.py')}-{image_id(BASE_IMAGE)}"
    if not (stamp.exists() and stamp.read_text() == key):
        shutil.rmtree(WHEELHOUSE, ignore_errors=True)
        run(
            # .tools/ is the venv `make` bootstraps uv into: it has pip, .venv has not.
            [
                str(REPO / ".tools" / "bin" / "python"),
                str(OFFLINE / "wheelhouse.py"),
                str(WHEELHOUSE),
                "--image",
                BASE_IMAGE,
                "--uv",
                str(REPO / ".tools" / "bin" / "uv"),
            ],
            timeout=600,
        )
        stamp.write_text(key)
    timings["wheelhouse"] = time.monotonic() - started

    started = time.monotonic()
    run(
        [
            "docker",
            "build",
            "--quiet",
            "--force-rm",
            "--build-arg",
            f"BASE_IMAGE={BASE_IMAGE}",
            "-t",
            NGINX_BASE_IMAGE,
            "-f",
            str(OFFLINE / "nginx.Dockerfile"),
            str(OFFLINE),
        ],
        timeout=600,
    )
    timings["nginx base image"] = time.monotonic() - started


# --- compose -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Compose:
    """One compose project from compose.yaml + compose.test.yaml, driven by one tool."""

    tool: list[str]  # ["docker-compose"] (1.29) or [".../docker-compose"] (v2 line)
    project: str
    workdir: Path
    http_port: int = field(default_factory=free_port)
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(40))
    postgres_password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env_file = self.workdir / "compose.env"
        values = {
            "SECRET_KEY": self.secret_key,
            "POSTGRES_PASSWORD": self.postgres_password,
            "CHAT_TEST_BASE_IMAGE": BASE_IMAGE,
            "CHAT_TEST_NGINX_BASE_IMAGE": NGINX_BASE_IMAGE,
            "CHAT_IMAGE": IMAGES["app"],
            "CHAT_NGINX_IMAGE": IMAGES["nginx"],
            "CHAT_LOCUST_IMAGE": IMAGES["locust"],
            "POSTGRES_IMAGE": IMAGES["postgres"],
            "REDIS_IMAGE": IMAGES["redis"],
            "HTTP_BIND": "127.0.0.1",
            "HTTP_PORT": str(self.http_port),
            "ALLOWED_HOSTS": "localhost,127.0.0.1,nginx",
            "CSRF_TRUSTED_ORIGINS": f"http://127.0.0.1:{self.http_port}",
            "WS_REPLICAS": str(WS_REPLICAS),
            "GUNICORN_WORKERS": "2",
            "NGINX_WORKER_PROCESSES": "1",
            **self.extra_env,
        }
        self.env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        os.chmod(self.env_file, 0o600)

    @property
    def version(self) -> str:
        return run([*self.tool, "version"], quiet=True).stdout.strip().splitlines()[0]

    def cmd(self, *args: str) -> list[str]:
        return [
            *self.tool,
            "--project-name",
            self.project,
            "--env-file",
            str(self.env_file),
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(COMPOSE_TEST_FILE),
            *args,
        ]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """What a command of this project runs with; `extra` overrides the env file (both
        compose tools let the process environment win over --env-file)."""
        # COMPOSE_* and the values of a developer's compose/.env must not leak in.
        full = {"COMPOSE_PROJECT_NAME": self.project, "COMPOSE_FILE": "", "COMPOSE_PROFILES": ""}
        return {**full, **(extra or {})}

    def __call__(
        self,
        *args: str,
        timeout: float = 600,
        check: bool = True,
        env: dict[str, str] | None = None,
    ):
        return run(self.cmd(*args), timeout=timeout, check=check, env=self.env(env))

    def network(self, name: str) -> str:
        """The engine's name of a network of the compose file (`edge` -> PROJECT_edge)."""
        label = f"label=com.docker.compose.project={self.project}"
        names = run(
            ["docker", "network", "ls", "--filter", label, "--format", "{{.Name}}"], quiet=True
        ).stdout.split()
        (found,) = [n for n in names if n.endswith(f"_{name}")]
        return found

    def container_ids(self, service: str, *, all_states: bool = False) -> list[str]:
        args = ["ps", "-q"] + (["-a"] if all_states else []) + [service]
        out = self(*args, check=False).stdout
        return [line.strip() for line in out.splitlines() if line.strip()]

    def down(self) -> None:
        self(
            "--profile",
            "loadtest",
            "down",
            "--volumes",
            "--remove-orphans",
            "--timeout",
            "15",
            timeout=300,
            check=False,
        )
        # Belt and braces: nothing of this project may stay behind, whatever the tool did.
        label = f"label=com.docker.compose.project={self.project}"
        for kind, remove in (
            ("container", ["docker", "rm", "-f"]),
            ("volume", ["docker", "volume", "rm", "-f"]),
            ("network", ["docker", "network", "rm"]),
        ):
            listing = ["docker", kind, "ls", "-q", "--filter", label]
            if kind == "container":
                listing.append("-a")
            ids = run(listing, check=False, quiet=True).stdout.split()
            if ids:
                run([*remove, *ids], check=False)


def build_changed_app_image(base: str, ref: str) -> None:
    """`ref`: the app image `base` as the next release would be, with a changed stylesheet
    and script, so their hashed names differ; collected again with --clear, so it has only
    the new names, as a real new image would. No build context (the Dockerfile on stdin)."""
    dockerfile = f"""FROM {base}
USER root
RUN set -eu; \\
    for f in chat.css index.js; do \\
        printf '\\n/* next release */\\n' >>/srv/chatstack/app/chat/static/chat/$f; \\
    done; \\
    DEBUG=1 CHAT_DATA_DIR=/tmp/build-data STATIC_ROOT=/srv/chatstack/static \\
        /opt/venv/bin/python /srv/chatstack/app/entrypoint.py collectstatic --clear \\
        --verbosity 0; \\
    rm -rf /tmp/build-data
USER 10001:10001
"""
    started = time.monotonic()
    proc = subprocess.run(
        ["docker", "build", "--quiet", "--force-rm", "-t", ref, "-"],
        input=dockerfile,
        env={**os.environ, **DOCKER_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    log(f"docker build {ref} -> {proc.returncode} in {time.monotonic() - started:.1f} s")
    if proc.returncode:
        raise RuntimeError(f"building {ref} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def inspect(container: str) -> dict:
    return json.loads(run(["docker", "inspect", container], quiet=True).stdout)[0]


def health(container: str) -> str:
    state = inspect(container)["State"]
    return state.get("Health", {}).get("Status") or state["Status"]


def address(container: str, network: str) -> str:
    """The container's IP address on a network (its engine name)."""
    return inspect(container)["NetworkSettings"]["Networks"][network]["IPAddress"]


def published_port(container: str, port: int = 8000) -> int:
    out = run(["docker", "port", container, f"{port}/tcp"], quiet=True).stdout
    return int(out.splitlines()[0].rsplit(":", 1)[1])


def http(
    url: str,
    *,
    timeout: float = 5,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_for(check, *, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down"):
        print(__doc__)
        return 2
    compose = Compose(
        tool=["docker-compose"],
        project=f"{PROJECT_PREFIX}-manual",
        workdir=CACHE / "manual",
        http_port=int(os.environ.get("HTTP_PORT", "8088")),
    )
    if argv[0] == "down":
        compose.down()
        return 0
    timings: dict[str, float] = {}
    build_base_images(timings)
    compose("build", timeout=1800)
    compose("up", "-d", "--no-build", timeout=600)
    print(f"http://127.0.0.1:{compose.http_port}/chat/  (env: {compose.env_file})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
