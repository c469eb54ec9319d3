"""Throwaway servers from the system's binaries: Redis, PostgreSQL, nginx and our own roles.

Each lives in a temp dir on a free (or given) port and is stopped by whoever started it.
The test suite (tests/plugins/services.py), `make stack` and the benchmarks all start their
servers through here; it lives outside app/ so that none of it ships in the runtime image.
PostgreSQL refuses to run as root, so when we are root it runs as the `postgres` system
user (via runuser), as CI machines need.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: Proc | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            raise ServerError(f"{what}: process exited with {proc.popen.returncode}\n{proc.tail()}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.05)
    raise ServerError(
        f"{what}: not ready after {timeout:.0f} s" + (f"\n{proc.tail()}" if proc else "")
    )


def binary(name: str, *extra_dirs: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for candidate in sorted(glob.glob(os.path.join(pattern, name)), reverse=True):
            if os.access(candidate, os.X_OK):
                return candidate
    raise ServerError(f"{name} is not installed (apt-get install the package that provides it).")


class Proc:
    """A child process with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict | None = None,
        cwd: str | None = None,
        user: str | None = None,
    ):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        self._log = open(log_path, "ab")  # noqa: SIM115
        self.popen = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        """Signal the whole process group: a wrapper like runuser may not pass it on."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        self.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        self._log.close()
        return self.popen.returncode

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _unprivileged_user() -> str | None:
    """Who runs PostgreSQL when we are root: `postgres` if it exists, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise ServerError("Running as root and no 'postgres' or 'nobody' user to run PostgreSQL as.")


class Redis:
    """One redis-server from a config file in its own dir (Sentinel rewrites that file when
    it turns the server into a replica, so a restart keeps the role it was given)."""

    def __init__(
        self,
        root: Path,
        port: int | None = None,
        name: str = "redis",
        replica_of: int | None = None,
    ):
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.replica_of = replica_of
        self.conf = self.dir / "redis.conf"
        self.log = self.dir / "redis.log"
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        if self.conf.exists():
            return  # as the server (or Sentinel, through CONFIG REWRITE) left it
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f'dir "{self.dir}"',
            'save ""',
            "appendonly no",
            "protected-mode no",
            "maxclients 10000",
            'logfile ""',
            # A replica's first sync at once, not after the default 5 s wait for others.
            "repl-diskless-sync-delay 0",
        ]
        if self.replica_of:
            lines.append(f"replicaof 127.0.0.1 {self.replica_of}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self) -> Redis:
        self._write_conf()
        argv = [binary("redis-server"), str(self.conf)]
        self.proc = Proc(self.name, argv, self.log)
        wait_until(lambda: self.ping(), 15, self.name, self.proc)
        return self

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def replication(self) -> dict[str, str]:
        """INFO replication as a dict (role, master_port, master_link_status, …)."""
        return _info(self.port, "replication")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            self.proc.stop(sig)
            self.proc = None


def _command(port: int, *args: str, timeout: float = 2.0) -> object:
    """One command to a Redis or Sentinel on 127.0.0.1, its reply parsed (redis-py)."""
    import redis

    client = redis.Redis("127.0.0.1", port, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return client.execute_command(*args)
    finally:
        client.close()


def _info(port: int, section: str) -> dict[str, str]:
    """INFO <section>, every value as text (redis-py parses it into a dict)."""
    raw = _command(port, "INFO", section)
    assert isinstance(raw, dict), raw
    return {str(key): str(value) for key, value in raw.items()}


def redis_shards(root: Path, count: int) -> list[Redis]:
    """`count` independent Redis servers (the channel layer's shards), not yet started."""
    return [Redis(root, name=f"redis-shard-{i}") for i in range(count)]


class Sentinel:
    """One Sentinel: `redis-server <conf> --sentinel` (Debian ships no separate binary
    that we rely on). Everything is 127.0.0.1, so no hostnames to resolve or announce."""

    def __init__(self, root: Path, index: int):
        self.name = f"sentinel-{index}"
        self.dir = root / self.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.conf = self.dir / "sentinel.conf"
        self.log = self.dir / "sentinel.log"
        self.proc: Proc | None = None

    def write_conf(self, master: str, master_port: int, quorum: int, down_ms: int, fail_ms: int):
        # Sentinel rewrites this file with what it learns (replicas, other sentinels, epochs).
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f'dir "{self.dir}"',
                    "protected-mode no",
                    'logfile ""',
                    "sentinel announce-ip 127.0.0.1",
                    f"sentinel monitor {master} 127.0.0.1 {master_port} {quorum}",
                    f"sentinel down-after-milliseconds {master} {down_ms}",
                    f"sentinel failover-timeout {master} {fail_ms}",
                    f"sentinel parallel-syncs {master} 1",
                ]
            )
            + "\n"
        )

    def start(self) -> Sentinel:
        argv = [binary("redis-server"), str(self.conf), "--sentinel"]
        self.proc = Proc(self.name, argv, self.log)
        wait_until(lambda: _command(self.port, "PING") in (True, b"PONG"), 15, self.name, self.proc)
        return self

    def master_address(self, master: str) -> tuple[str, int] | None:
        reply = _command(self.port, "SENTINEL", "get-master-addr-by-name", master)
        if not reply:
            return None
        host, port = (v.decode() if isinstance(v, bytes) else str(v) for v in reply)
        return host, int(port)

    def master_state(self, master: str) -> dict[str, str]:
        """SENTINEL MASTER as a dict (flags, num-slaves, num-other-sentinels, …)."""
        reply = _command(self.port, "SENTINEL", "MASTER", master)
        if isinstance(reply, dict):
            return {str(k): str(v) for k, v in reply.items()}
        items = [v.decode() if isinstance(v, bytes) else str(v) for v in reply]
        return dict(zip(items[::2], items[1::2], strict=True))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            self.proc.stop(sig)
            self.proc = None


class SentinelRedis:
    """A master, its replicas and three Sentinels that agree (quorum 2) on which is master.

    After `kill_master()` the Sentinels see it down after `down_after_ms`, elect a leader
    and promote the replica; `wait_failover()` returns once a quorum names the new master
    and it says so itself. `restart(node)` brings a killed node back with its own config:
    Sentinel turns an old master into a replica of the new one (and rewrites its config).
    The failover timeout is short so that a second failover can follow in the same test.
    """

    def __init__(
        self,
        root: Path,
        master_name: str = "chat",
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        down_after_ms: int = 5000,
        failover_timeout_ms: int = 10000,
    ):
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        first = Redis(root, name="redis-0")
        self.nodes = [first] + [
            Redis(root, name=f"redis-{i}", replica_of=first.port) for i in range(1, replicas + 1)
        ]
        self.sentinels = [Sentinel(root, i) for i in range(1, sentinels + 1)]

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS: host:port,host:port,…"""
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def procs(self) -> dict[str, Proc]:
        return {p.name: p.proc for p in [*self.nodes, *self.sentinels] if p.proc is not None}

    def logs(self) -> dict[str, Path]:
        return {p.name: p.log for p in [*self.nodes, *self.sentinels]}

    def node(self, port: int) -> Redis:
        for node in self.nodes:
            if node.port == port:
                return node
        raise ServerError(f"no Redis of this topology listens on {port}")

    def start(self) -> SentinelRedis:
        master = self.nodes[0]
        for node in self.nodes:
            node.start()
        for node in self.nodes[1:]:
            wait_until(lambda n=node: _linked(n, master.port), 30, f"{node.name} replicating")
        for sentinel in self.sentinels:
            sentinel.write_conf(
                self.master_name,
                master.port,
                self.quorum,
                self.down_after_ms,
                self.failover_timeout_ms,
            )
            sentinel.start()
        others = str(len(self.sentinels) - 1)
        replicas = str(len(self.nodes) - 1)

        def acquainted(sentinel: Sentinel) -> bool:
            state = sentinel.master_state(self.master_name)
            return state["num-other-sentinels"] == others and state["num-slaves"] == replicas

        for sentinel in self.sentinels:
            what = f"{sentinel.name} sees its peers"
            wait_until(lambda s=sentinel: acquainted(s), 30, what, sentinel.proc)
        return self

    def stop(self) -> None:
        for server in [*self.sentinels, *self.nodes]:
            server.stop()

    def master_votes(self) -> dict[int, int]:
        """How many running Sentinels name each master port."""
        votes: dict[int, int] = {}
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                continue
            with contextlib.suppress(Exception):
                address = sentinel.master_address(self.master_name)
                if address:
                    votes[address[1]] = votes.get(address[1], 0) + 1
        return votes

    def master(self) -> Redis:
        """The node a quorum of Sentinels names as master."""
        agreed = [port for port, n in self.master_votes().items() if n >= self.quorum]
        if not agreed:
            raise ServerError(f"no quorum of Sentinels agrees on a master: {self.master_votes()}")
        return self.node(agreed[0])

    def kill_master(self) -> Redis:
        """SIGKILL the current master (no shutdown, no goodbye to anyone); the node."""
        master = self.master()
        master.stop(signal.SIGKILL)
        return master

    def wait_failover(self, old: Redis, timeout: float = 60.0) -> Redis:
        """Until a quorum of Sentinels names a new master that reports role:master."""
        found: list[Redis] = []

        def promoted() -> bool:
            new = self.master()
            if new is old or new.replication().get("role") != "master":
                return False
            found.append(new)
            return True

        wait_until(promoted, timeout, f"failover away from {old.name}")
        return found[-1]

    def restart(self, node: Redis, timeout: float = 60.0) -> None:
        """Start a killed node again and wait until it replicates the current master."""
        if node.proc is None:
            node.start()
        master = self.master()
        if node is not master:
            wait_until(lambda: _linked(node, master.port), timeout, f"{node.name} as replica")

    def ensure_running(self) -> None:
        for sentinel in self.sentinels:
            if sentinel.proc is None:
                sentinel.start()
        for node in self.nodes:
            if node.proc is None:
                self.restart(node)


def _linked(node: Redis, master_port: int) -> bool:
    """`node` is a replica of `master_port` with its link up (initial sync done)."""
    info = node.replication()
    return (
        info.get("role") == "slave"
        and info.get("master_port") == str(master_port)
        and info.get("master_link_status") == "up"
    )


PG_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin")


class Postgres:
    def __init__(self, root: Path, port: int | None = None, database: str = "chat"):
        self.root = root / "postgres"
        self.data = self.root / "data"
        self.port = port or free_port()
        self.database = database
        self.user = _unprivileged_user()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, argv: list[str]) -> None:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise ServerError(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            # The owner must reach its data dir through every parent.
            for parent in self.root.parents:
                mode = parent.stat().st_mode
                if mode & 0o001:
                    continue
                parent.chmod(mode | 0o011)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if not (self.data / "PG_VERSION").exists():
            self._run(
                [
                    binary("initdb", *PG_DIRS),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                    "--no-sync",
                ]
            )
        argv = [
            binary("postgres", *PG_DIRS),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.root}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "max_connections=300",
            "-c",
            "shared_buffers=64MB",
        ]
        self.proc = Proc("postgres", argv, self.root / "postgres.log", user=self.user)
        wait_until(lambda: self._accepting(), 30, "postgres", self.proc)
        if not self._database_exists():
            self._psql(f"CREATE DATABASE {self.database}")
        return self

    def _psql(self, sql: str) -> str:
        argv = [
            binary("psql", *PG_DIRS),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-tAc",
            sql,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode:
            raise ServerError(done.stderr)
        return done.stdout.strip()

    def _accepting(self) -> bool:
        return self._psql("SELECT 1") == "1"

    def _database_exists(self) -> bool:
        return self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'") == "1"

    def stop(self, sig: int = signal.SIGINT) -> None:
        # SIGINT is PostgreSQL's "fast shutdown": roll back sessions, exit cleanly.
        if self.proc:
            self.proc.stop(sig, timeout=20)
            self.proc = None


def start_test_services() -> dict[str, str]:
    """Start Redis and PostgreSQL for one test process; they stop when it exits."""
    import atexit
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="chat-test-"))
    redis = Redis(root).start()
    postgres = Postgres(root).start()

    def stop() -> None:
        postgres.stop()
        redis.stop()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    return {
        "DATABASE_URL": postgres.url,
        "REDIS_URL": redis.url,
        "CHAT_TEST_REDIS_PORT": str(redis.port),
        "CHAT_TEST_SERVICES_ROOT": str(root),
    }


def _ephemeral_start() -> int:
    """Where the kernel starts picking ports for outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, start: int = 15000, end: int | None = None) -> int:
    """The first of `count` consecutive free ports (for a stack with predictable offsets).

    Chosen below the ephemeral range: a port found free there could be taken by any
    outgoing connection before the server binds it.
    """
    import random

    end = end or _ephemeral_start()
    for _ in range(200):
        first = random.randrange(start, end - count)
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return first
    raise ServerError(f"no {count} consecutive free ports between {start} and {end}")


REPO_DIR = Path(__file__).resolve().parents[2]


def nginx_connection_env(budget: int) -> dict[str, str]:
    """nginx sized for `budget` WebSockets (nginx/render.sh), within this process's hard
    open-files limit: nginx, unprivileged, can raise its soft limit only that far."""
    connections = 2 * budget + 1024
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        connections = max(64, min(connections, hard - 1024))
    return {"NGINX_CONNECTION_BUDGET": str(budget), "NGINX_WORKER_CONNECTIONS": str(connections)}


class Nginx:
    """nginx from the system binary, configured by nginx/render.sh into root/nginx.

    The same templates and script serve containers; here they are filled with this
    machine's addresses. Logs: root/nginx/access.log (JSON) and error.log.
    """

    def __init__(
        self,
        root: Path,
        port: int,
        web: list[str],
        ws: list[str],
        static_root: Path,
        extra: dict[str, str] | None = None,
    ):
        self.dir = root / "nginx"
        self.port = port
        self.access_log = self.dir / "access.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NGINX_PORT": str(port),
            "NGINX_BIND": "127.0.0.1",
            "CHAT_WEB_UPSTREAM": ",".join(web),
            "CHAT_WS_UPSTREAM": ",".join(ws),
            "CHAT_STATIC_ROOT": str(static_root),
            "NGINX_ACCESS_LOG": str(self.access_log),
            "NGINX_ERROR_LOG": "stderr",
            "NGINX_RUN_DIR": str(self.dir / "run"),
            "NGINX_WORKER_PROCESSES": "2",
            **(extra or {}),
        }
        self.proc: Proc | None = None

    def render(self) -> None:
        done = subprocess.run(
            ["sh", str(REPO_DIR / "nginx" / "render.sh"), str(self.dir)],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode:
            raise ServerError(f"nginx/render.sh failed:\n{done.stderr}")

    def start(self) -> Nginx:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.render()
        conf = str(self.dir / "nginx.conf")
        argv = [binary("nginx", "/usr/sbin"), "-p", str(self.dir), "-c", conf, "-e", "stderr"]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, check=False)
        if check.returncode:
            raise ServerError(f"nginx rejected its configuration:\n{check.stderr}")
        self.proc = Proc("nginx", [*argv, "-g", "daemon off;"], self.dir / "error.log")
        wait_until(lambda: port_open(self.port), 15, "nginx", self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc:
            self.proc.stop(sig, timeout=10)
            self.proc = None
