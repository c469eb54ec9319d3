"""`make stack`: the production topology on this machine, from system binaries.

PostgreSQL and Redis, then `migrate` and `collectstatic`, then gunicorn and N daphne
replicas, then nginx in front, each started through app/entrypoint.py roles exactly as a
container would start it, with production settings (DEBUG=0) and JSON logs. State lives
in a temp dir that is removed on stop; nothing is left running.

Ports are predictable so tools can reach each process directly:

    nginx            127.0.0.1:8080          (port=, STACK_PORT)
    gunicorn         127.0.0.1:8100          (base_port=, STACK_BASE_PORT)
    replica i ≥ 1    127.0.0.1:8100+i        named ws-i
    Redis, Postgres  free ports              (see .stack/env)

The Python API is what the stack tests, the benchmarks and the browser tests share:

    from localstack.stack import Stack

    with Stack(replicas=3, port=8080, base_port=8100, env={"CHAT_PRESENCE_TTL": "4"}) as s:
        s.url                          # http://127.0.0.1:8080 (nginx)
        s.ws_url("lobby")              # ws://127.0.0.1:8080/ws/chat/lobby/ (through nginx)
        s.ws_url("lobby", replica=2)   # straight to replica 2
        s.web_url                      # http://127.0.0.1:8100 (gunicorn)
        s.replica(2).url, .name, .pid  # one replica
        s.stop_replica(2)              # SIGTERM: drain (close with 1012), exit; returns the code
        s.signal_replica(2); s.wait_replica(2, timeout)  # the same in two steps
        s.kill_replica(2)              # SIGKILL: no drain, presence expires after the TTL
        s.start_replica(2, 3)          # start them again on their ports, wait until ready
        s.roll(1, 4)                   # with Stack(spares=1): start ws-4, then drain ws-1
        s.ensure_running()             # bring back whatever was stopped, paused or killed
        s.spawn_ws("x-1", port, CHAT_WS_MAX_HANDSHAKES="1")  # a ws process nginx lacks
        s.stop_redis() / s.start_redis()        # same port, empty (no persistence)
        s.stop_postgres() / s.start_postgres()  # same port, data kept
        s.pause_postgres() / s.resume_postgres()  # SIGSTOP/SIGCONT: a hung database
        s.manage("create_users", "--count", "10", "--tokens-out", path)  # a manage.py job
        s.env                          # the app's environment (DATABASE_URL, REDIS_URL, …)
        s.process_urls()               # {"web": url, "ws-1": url, …}: /readyz and /metrics
        s.processes()                  # {name: Proc} of everything running
        s.logs()                       # {name: log path} of every process

`spares=N` adds N standby slots nginx knows but nothing runs on, for `roll`: a rolling
update with a surge, as Kubernetes does it (the replacement is ready before the old
replica drains). `env=` adds or overrides app settings (CHAT_* tunables, LOG_LEVEL…);
`env_file=` writes a sourceable copy of the environment (the CLI uses .stack/env). The
per-address abuse limits and room creation are raised (STACK_LIMITS): load tools connect
from one address. nginx is sized for STACK_WS_BUDGET (10,000) WebSockets. Command line:

    python tools/localstack [--replicas N] [--port P] [--base-port B] [--env-file F] [--keep]

(defaults from WS_REPLICAS, STACK_PORT, STACK_BASE_PORT, STACK_ENV_FILE).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from localstack.servers import (
    Nginx,
    Postgres,
    Proc,
    Redis,
    ServerError,
    nginx_connection_env,
    port_open,
    wait_until,
)

REPO_DIR = Path(__file__).resolve().parents[2]
# Every role starts through the app's own entrypoint, as the image, compose and k8s do.
ENTRYPOINT = REPO_DIR / "app" / "entrypoint.py"
HOST = "127.0.0.1"
READY_TIMEOUT = 120.0  # generous: a busy 2-core machine starts slowly

# Never inherited from the caller: the stack decides these for every process it starts.
_OWN_KEYS = (
    "DATABASE_URL",
    "REDIS_URL",
    "DJANGO_SETTINGS_MODULE",
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "CSRF_TRUSTED_ORIGINS",
    "STATIC_ROOT",
    "CHAT_DATA_DIR",
    "CHAT_ROLE",
    "REPLICA_NAME",
    "PORT",
    "WEB_PORT",
    "BIND_HOST",
    "PROMETHEUS_MULTIPROC_DIR",
)


# Abuse limits raised here: `make stack` is where load tools and tests open thousands of
# sockets, sign up and create rooms from one address (127.0.0.1, through nginx or not).
# Production keeps config/settings/base.py's tight defaults (docs/operations.md, "Abuse
# limits"). A value in the caller's environment, or in env=, wins over these.
# WebSockets the stack's nginx is sized for (worker_connections, worker_rlimit_nofile);
# each ws replica raises its own open-files limit (config/wsserver.py).
DEFAULT_WS_BUDGET = 10_000
STACK_LIMITS = {
    "CHAT_WS_PER_ADDRESS": "100000",
    "CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR": "10000",
    "CHAT_ROOMS_PER_USER_PER_HOUR": "10000",
}


def http_get(url: str, timeout: float = 3.0) -> tuple[int, bytes]:
    """Status and body of a GET; HTTP errors are answers too, not exceptions."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ready(url: str) -> bool:
    return http_get(url + "/readyz")[0] == 200


@dataclass
class Replica:
    """One daphne process of the `ws` role."""

    index: int
    port: int
    proc: Proc | None = None

    @property
    def name(self) -> str:
        return f"ws-{self.index}"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.alive() else None


class Stack:
    """The whole topology; see the module docstring for the API."""

    def __init__(
        self,
        *,
        replicas: int = 3,
        port: int = 8080,
        base_port: int = 8100,
        root: Path | None = None,
        env: dict[str, str] | None = None,
        env_file: Path | None = None,
        web_workers: int = 2,
        keep: bool = False,
        quiet: bool = True,
        spares: int = 0,
    ):
        if replicas < 1:
            raise ValueError("a stack needs at least one ws replica")
        slots = replicas + spares
        ports = [port, base_port, *(base_port + i for i in range(1, slots + 1))]
        if any(not 1 <= p <= 65535 for p in ports):
            raise ValueError(f"ports out of range: {ports}")
        if port in ports[1:]:
            raise ValueError(f"nginx port {port} collides with the app ports {ports[1:]}")
        self.port = port
        self.web_port = base_port
        self.replicas = [Replica(i, base_port + i) for i in range(1, slots + 1)]
        # Slots nginx knows but nothing runs on: where `roll` starts a replacement first,
        # as a Deployment's surge pod (maxSurge 1, maxUnavailable 0).
        self.standby = {r.index for r in self.replicas[replicas:]}
        self.extra_env = dict(env or {})
        self.env_file = env_file
        self.web_workers = web_workers
        self.keep = keep
        self.quiet = quiet
        self._own_root = root is None
        self.root = root or Path(tempfile.mkdtemp(prefix="chat-stack-"))
        self.redis: Redis | None = None
        self.postgres: Postgres | None = None
        self.web: Proc | None = None
        self.nginx: Nginx | None = None
        self.env: dict[str, str] = {}
        self._started = False
        self._lock = threading.Lock()

    # --- addresses ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def web_url(self) -> str:
        return f"http://{HOST}:{self.web_port}"

    def ws_url(self, room: str, replica: int | None = None) -> str:
        port = self.port if replica is None else self.replica(replica).port
        return f"ws://{HOST}:{port}/ws/chat/{room}/"

    def replica(self, index: int) -> Replica:
        if not 1 <= index <= len(self.replicas):
            raise IndexError(f"replica {index}: this stack has 1..{len(self.replicas)}")
        return self.replicas[index - 1]

    def process_urls(self) -> dict[str, str]:
        """Every app process by name (web, ws-1, …): where /readyz and /metrics answer."""
        return {"web": self.web_url, **{r.name: r.url for r in self.serving()}}

    def serving(self) -> list[Replica]:
        """The replica slots meant to run (all but the standby ones)."""
        return [r for r in self.replicas if r.index not in self.standby]

    def logs(self) -> dict[str, Path]:
        """Every log file by name: web, ws-i, migrate, collectstatic, nginx, nginx-access,
        redis, postgres."""
        found = {p.stem: p for p in sorted((self.root / "logs").glob("*.log"))}
        if self.nginx:
            found["nginx"] = self.nginx.dir / "error.log"
            found["nginx-access"] = self.nginx.access_log
        if self.redis:
            found["redis"] = self.redis.dir / "redis.log"
        if self.postgres:
            found["postgres"] = self.postgres.root / "postgres.log"
        return {name: path for name, path in found.items() if path.exists()}

    # --- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    def _check_ports(self) -> None:
        named = {
            self.port: "nginx (STACK_PORT)",
            self.web_port: "gunicorn (STACK_BASE_PORT)",
            **{r.port: f"{r.name} (STACK_BASE_PORT+{r.index})" for r in self.replicas},
        }
        busy = [f"{port} for {what}" for port, what in named.items() if port_open(port)]
        if busy:
            raise ServerError(
                "ports already in use: " + ", ".join(busy) + "; another stack running? "
                "Stop it or choose other ports with STACK_PORT / STACK_BASE_PORT."
            )

    def start(self) -> Stack:
        try:
            self._check_ports()
        except ServerError:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)
            raise
        atexit.register(self.stop)
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        # nginx workers (an unprivileged user when we are root) read the static files.
        self.root.chmod(0o755)
        (self.root / "logs").mkdir(exist_ok=True)
        self._say(f"state in {self.root}")
        self._say("starting PostgreSQL and Redis…")
        self.redis = Redis(self.root)
        self.postgres = Postgres(self.root)
        self.redis.start()
        self.postgres.start()
        self.env = self._app_env()
        if self.env_file:
            self._write_env_file(self.env_file)
        self._say("migrate and collectstatic…")
        jobs = [
            self._role("migrate", "migrate", ["--verbosity", "0"]),
            self._role("collectstatic", "collectstatic", ["--verbosity", "0"]),
        ]
        for job in jobs:
            code = job.popen.wait(180)
            job.stop()
            if code:
                raise ServerError(f"{job.name} failed with {code}:\n{job.tail()}")
        _readable(Path(self.env["STATIC_ROOT"]))
        self._say(f"gunicorn and {len(self.serving())} daphne replicas…")
        self.web = self._start_web()
        for replica in self.serving():
            self._spawn_replica(replica)
        self.nginx = Nginx(
            self.root,
            self.port,
            web=[f"{HOST}:{self.web_port}"],
            ws=[f"{HOST}:{r.port}" for r in self.replicas],
            static_root=Path(self.env["STATIC_ROOT"]),
            # Sized like a pod's nginx, for the sockets a load test brings (STACK_WS_BUDGET).
            extra=nginx_connection_env(_int_env("STACK_WS_BUDGET", DEFAULT_WS_BUDGET)),
        ).start()
        wait_until(lambda: _ready(self.web_url), READY_TIMEOUT, "gunicorn", self.web)
        for replica in self.serving():
            wait_until(lambda r=replica: _ready(r.url), READY_TIMEOUT, replica.name, replica.proc)
        wait_until(lambda: _ready(self.url), READY_TIMEOUT, "nginx → gunicorn", self.nginx.proc)

    def stop(self) -> None:
        """Stop everything this stack started, in reverse order; safe to call twice."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        atexit.unregister(self.stop)
        errors: list[str] = []

        def attempt(what: str, fn) -> None:
            try:
                fn()
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        if self.nginx:
            attempt("nginx", self.nginx.stop)
        for replica in self.replicas:
            attempt(replica.name, lambda r=replica: self._stop_proc(r, signal.SIGTERM))
        if self.web:
            attempt("gunicorn", lambda: self.web.stop(signal.SIGTERM, timeout=30))
        if self.redis:
            attempt("redis", self.redis.stop)
        if self.postgres:
            attempt("postgres", self.resume_postgres)
            attempt("postgres", self.postgres.stop)
        if self.env_file:
            with contextlib.suppress(OSError):
                if self.env_file.read_text().find(str(self.root)) >= 0:
                    self.env_file.unlink()
        if self._own_root and not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        if errors:
            raise ServerError("stopping the stack: " + "; ".join(errors))

    # --- environment --------------------------------------------------------------------

    def _app_env(self) -> dict[str, str]:
        assert self.postgres and self.redis
        origins = [f"http://{host}:{self.port}" for host in (HOST, "localhost")]
        env = {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DEBUG": "0",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "ALLOWED_HOSTS": f"{HOST},localhost",
            "CSRF_TRUSTED_ORIGINS": ",".join(origins),
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "STATIC_ROOT": str(self.root / "static"),
            "CHAT_DATA_DIR": str(self.root / "data"),
            # Only nginx, on this host, reaches the app ports: its headers are the truth.
            "TRUST_PROXY_HEADERS": "1",
            "FORWARDED_ALLOW_IPS": HOST,
            "LOG_FORMAT": "json",
        }
        env.update({k: v for k, v in STACK_LIMITS.items() if k not in os.environ})
        env.update(self.extra_env)
        return env

    def _process_env(self, **extra: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in _OWN_KEYS}
        return {**base, **self.env, "BIND_HOST": HOST, **extra}

    def _write_env_file(self, path: Path) -> None:
        lines = [
            "# The running `make stack` (removed when it stops). Use: . .stack/env",
            f"# state in {self.root}",
        ]
        values = {
            **self.env,
            "STACK_URL": self.url,
            "STACK_WEB_URL": self.web_url,
            "STACK_WS_URLS": ",".join(r.url for r in self.replicas),
        }
        lines += [f"export {k}={shlex.quote(v)}" for k, v in values.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)  # it holds SECRET_KEY

    # --- processes -------------------------------------------------------------------

    def _role(self, name: str, role: str, args: list[str], **env: str) -> Proc:
        return Proc(
            name,
            [sys.executable, str(ENTRYPOINT), role, *args],
            self.root / "logs" / f"{name}.log",
            env=self._process_env(**env),
            cwd=str(REPO_DIR),
        )

    def _start_web(self) -> Proc:
        metrics_dir = self.root / "metrics-web"
        metrics_dir.mkdir(exist_ok=True)
        return self._role(
            "web",
            "web",
            [],
            WEB_PORT=str(self.web_port),
            REPLICA_NAME="web",
            GUNICORN_WORKERS=str(self.web_workers),
            PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        )

    def _spawn_replica(self, replica: Replica) -> None:
        replica.proc = self._role(
            replica.name,
            "ws",
            ["--port", str(replica.port)],
            PORT=str(replica.port),
            REPLICA_NAME=replica.name,
        )

    def _stop_proc(self, replica: Replica, sig: int, timeout: float | None = None) -> int | None:
        if replica.proc is None:
            return None
        drain = float(self.env.get("CHAT_DRAIN_TIMEOUT", 10))
        code = replica.proc.stop(sig, timeout=timeout or drain + 10)
        replica.proc = None
        return code

    # --- what tests and tools do to a running stack --------------------------------------

    def stop_replica(self, index: int, timeout: float | None = None) -> int | None:
        """SIGTERM: the replica drains and exits. Returns its exit code."""
        return self._stop_proc(self.replica(index), signal.SIGTERM, timeout)

    def kill_replica(self, index: int) -> int | None:
        """SIGKILL: gone at once, no disconnect handlers, no drain."""
        return self._stop_proc(self.replica(index), signal.SIGKILL)

    def signal_replica(self, index: int, sig: int = signal.SIGTERM) -> None:
        """Send a signal and return at once (watch the drain from outside)."""
        replica = self.replica(index)
        if replica.proc is None:
            raise ServerError(f"{replica.name} is not running")
        replica.proc.send_signal(sig)

    def wait_replica(self, index: int, timeout: float) -> int | None:
        """Wait for a signalled replica to exit; its exit code."""
        replica = self.replica(index)
        if replica.proc is None:
            return None
        try:
            replica.proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self._stop_proc(replica, signal.SIGKILL)

    def start_replica(self, *indexes: int) -> None:
        """Start the given replicas (stopped or dead) on their ports; wait until ready."""
        self.standby.difference_update(indexes)
        started = []
        for index in indexes:
            replica = self.replica(index)
            if replica.proc is not None and replica.proc.alive():
                continue
            if replica.proc is not None:
                replica.proc.stop()  # reap it and close its log
            self._spawn_replica(replica)
            started.append(replica)
        for replica in started:
            wait_until(lambda r=replica: _ready(r.url), READY_TIMEOUT, replica.name, replica.proc)

    def spawn_ws(self, name: str, port: int, **env: str) -> Proc:
        """Start a ws process on this stack's data stores that its nginx does not know,
        with `env` over the stack's settings (its own admission limits, say): for a test
        that puts its own nginx in front. Returns at once; the caller stops it."""
        return self._role(
            name, "ws", ["--port", str(port)], PORT=str(port), REPLICA_NAME=name, **env
        )

    def ensure_running(self) -> None:
        """Bring back whatever was stopped, paused or killed; wait until all are ready."""
        self.resume_postgres()
        self.start_postgres()
        self.start_redis()
        self.start_replica(*(r.index for r in self.serving()))
        for name, url in [*self.process_urls().items(), ("nginx", self.url)]:
            wait_until(lambda u=url: _ready(u), READY_TIMEOUT, f"{name} /readyz")

    def roll(self, old: int, new: int, timeout: float | None = None) -> int | None:
        """One step of a rolling update with a surge, as a Deployment with maxSurge 1 and
        maxUnavailable 0 does it: start the replacement on the standby slot `new`, wait
        until it is ready, then SIGTERM `old` (which drains) and wait for it to exit; `old`
        becomes the standby slot. Returns the old replica's exit code."""
        if new not in self.standby:
            raise ServerError(f"ws-{new} is not a standby slot (standby: {sorted(self.standby)})")
        self.standby.discard(new)
        self.start_replica(new)
        self.standby.add(old)
        return self.stop_replica(old, timeout)

    def stop_redis(self) -> None:
        assert self.redis
        self.redis.stop()

    def start_redis(self) -> None:
        assert self.redis
        if self.redis.proc is None:
            self.redis.start()

    def stop_postgres(self) -> None:
        assert self.postgres
        self.postgres.stop()

    def start_postgres(self) -> None:
        assert self.postgres
        if self.postgres.proc is None:
            self.postgres.start()

    def pause_postgres(self) -> None:
        """SIGSTOP every PostgreSQL process: queries hang instead of failing."""
        assert self.postgres and self.postgres.proc
        # Backends call setsid(), so signalling the process group is not enough.
        for pid in _descendants(self.postgres.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume_postgres(self) -> None:
        if self.postgres and self.postgres.proc:
            for pid in _descendants(self.postgres.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a manage.py command against the stack (entrypoint `manage` role)."""
        done = subprocess.run(
            [sys.executable, str(ENTRYPOINT), "manage", *args],
            env=self._process_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode:
            raise ServerError(f"manage {' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
        return done

    def processes(self) -> dict[str, Proc]:
        """Every running process the stack started, by name."""
        procs: dict[str, Proc | None] = {
            "redis": self.redis.proc if self.redis else None,
            "postgres": self.postgres.proc if self.postgres else None,
            "web": self.web,
            "nginx": self.nginx.proc if self.nginx else None,
            **{r.name: r.proc for r in self.replicas},
        }
        return {name: p for name, p in procs.items() if p is not None and p.alive()}


def _descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        found.append(current)
        queue.extend(children.get(current, []))
    return found


def _readable(path: Path) -> None:
    """Make collected static files readable by nginx's workers, whatever the umask."""
    for folder, _dirs, files in os.walk(path):
        os.chmod(folder, 0o755)
        for name in files:
            os.chmod(os.path.join(folder, name), 0o644)


# --- command line -------------------------------------------------------------------------


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        sys.exit(f"{name}={raw!r} is not a whole number.")


def _summary(stack: Stack, env_file: Path | None) -> str:
    def limit(name: str) -> str:
        return stack.env.get(name) or os.environ.get(name) or "-"

    lines = [
        "",
        f"Chat stack ready: {stack.url}/chat/",
        f"  nginx      {stack.url}   pages, API, /static/, /ws/ over "
        f"{len(stack.replicas)} replicas",
        f"  gunicorn   {stack.web_url}   (direct: /readyz /metrics)",
    ]
    lines += [f"  {r.name:<10} {r.url}   (direct: /readyz /metrics)" for r in stack.replicas]
    lines += [
        f"  redis      {stack.env['REDIS_URL']}",
        f"  postgres   {stack.env['DATABASE_URL']}",
        f"  logs       {stack.root / 'logs'}/  and {stack.root / 'nginx'}/access.log",
        f"  limits     {limit('CHAT_WS_PER_ADDRESS')} sockets and "
        f"{limit('CHAT_SIGNUPS_PER_ADDRESS_PER_HOUR')} signups/h per address, "
        f"{limit('CHAT_ROOMS_PER_USER_PER_HOUR')} new rooms/h per user: raised for load "
        "tools, not production's (docs/operations.md)",
    ]
    if env_file:
        shown = env_file.relative_to(REPO_DIR) if env_file.is_relative_to(REPO_DIR) else env_file
        lines.append(
            f"  env        . {shown}   then e.g. .venv/bin/python app/manage.py create_users "
            "--count 10 --prefix u --tokens-out /tmp/tokens"
        )
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


class _Stop(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tools/localstack",
        description="Run nginx + gunicorn + N daphne replicas + Redis + PostgreSQL locally.",
    )
    parser.add_argument("--replicas", type=int, default=_int_env("WS_REPLICAS", 3))
    parser.add_argument("--port", type=int, default=_int_env("STACK_PORT", 8080))
    parser.add_argument("--base-port", type=int, default=_int_env("STACK_BASE_PORT", 8100))
    parser.add_argument(
        "--env-file",
        type=Path,
        default=Path(os.environ.get("STACK_ENV_FILE") or REPO_DIR / ".stack" / "env"),
    )
    parser.add_argument("--keep", action="store_true", help="keep the state dir after stopping")
    opts = parser.parse_args(argv)
    if not 1 <= opts.replicas <= 50:
        parser.error("--replicas (WS_REPLICAS) must be from 1 to 50")

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        stack = Stack(
            replicas=opts.replicas,
            port=opts.port,
            base_port=opts.base_port,
            env_file=opts.env_file.resolve(),
            keep=opts.keep,
            quiet=False,
        )
    except ValueError as exc:
        parser.error(str(exc))
    code = 0
    try:
        stack.start()
        print(_summary(stack, opts.env_file.resolve()), flush=True)
        reported: set[str] = set()
        while True:
            time.sleep(1)
            expected = {"redis", "postgres", "web", "nginx", *(r.name for r in stack.replicas)}
            for name in sorted(expected - set(stack.processes()) - reported):
                print(f"warning: {name} exited; see {stack.root / 'logs'}", flush=True)
                reported.add(name)
    except _Stop:
        pass
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        # A second Ctrl-C must not cut the shutdown short: every stop has its own timeout.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("stopping…", flush=True)
        try:
            stack.stop()
        except ServerError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            code = 1
        print("stopped.", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
