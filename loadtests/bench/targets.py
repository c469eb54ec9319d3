"""What the benchmark measures, each started on free ports and stopped afterwards.

    project   the real topology through tools/localstack's Stack API (nginx, gunicorn,
              N daphne replicas, Redis, PostgreSQL), one channel layer or the other
    ceiling   bench/ceiling.py (one `websockets` process) behind the same nginx config
    tutorial  bench/tutorial/ on N daphne processes, Redis and PostgreSQL, behind nginx

Every target exposes the same things: the nginx WebSocket URL of the room, tokens for
the connections, the frame that ends a join, and its processes by name (for CPU and
memory) with the port each WebSocket server listens on (to count its connections).
The project also exposes its Stack (the storm restarts replicas) and HTTP address.

`budget` sizes nginx for that many WebSockets (NGINX_CONNECTION_BUDGET: worker_connections
of 2 × budget + 1024, since a proxied socket is two connections).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tools"))

from localstack.servers import (  # noqa: E402
    Nginx,
    Postgres,
    Proc,
    Redis,
    free_port,
    free_ports,
    port_open,
    wait_until,
)
from localstack.stack import Stack  # noqa: E402

ROOM = "bench"
DAPHNE = [sys.executable, "-m", "daphne", "-b", "127.0.0.1"]


# A project target's variants, after a "+": what each sets in the ws replicas' environment.
# `stock` is daphne and channels_redis as shipped: every fast path of app/realtime/ off.
VARIANTS = {
    "stock": {"CHAT_FAST_PATHS_OFF": "all"},
}
FAST_PATH_OFF = "no-"  # "+no-write_now": that one fast path off


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # project | ceiling | tutorial
    replicas: int = 1
    layer: str = ""  # project: redis | pubsub
    variants: tuple[str, ...] = ()  # project: "stock", "no-<fast path>"

    @property
    def label(self) -> str:
        if self.kind == "project":
            return "+".join((f"{self.layer}-{self.replicas}", *self.variants))
        if self.kind == "tutorial":
            return f"tutorial-{self.replicas}"
        return "ceiling"

    @property
    def title(self) -> str:
        if self.kind == "project":
            layer = "RedisChannelLayer" if self.layer == "redis" else "RedisPubSubChannelLayer"
            extra = f" ({', '.join(self.variants)})" if self.variants else ""
            return f"project, {layer}, {self.replicas} ws replica(s){extra}"
        if self.kind == "tutorial":
            return f"tutorial floor, {self.replicas} daphne process(es)"
        return "ceiling (websockets, 1 process)"

    @property
    def env(self) -> dict[str, str]:
        """The replicas' settings for this target's variants."""
        out: dict[str, str] = {}
        off = [v.removeprefix(FAST_PATH_OFF) for v in self.variants if v.startswith(FAST_PATH_OFF)]
        for variant in self.variants:
            out.update(VARIANTS.get(variant, {}))
        if off and out.get("CHAT_FAST_PATHS_OFF") != "all":
            out["CHAT_FAST_PATHS_OFF"] = ",".join(off)
        return out

    def describe(self) -> dict[str, object]:
        """What a results file says of the target, ahead of its figures."""
        return {
            "target": self.label,
            "title": self.title,
            "kind": self.kind,
            "replicas": self.replicas,
            "layer": self.layer,
            "variants": list(self.variants),
        }


def parse_targets(text: str) -> list[TargetSpec]:
    """`ceiling`, `tutorial-N`, `redis-N` or `pubsub-N`; a project target may add
    variants: `redis-1+stock`, `redis-1+no-write_now+no-direct_writer`."""
    specs = []
    for raw in (t.strip() for t in text.split(",") if t.strip()):
        if raw == "ceiling":
            specs.append(TargetSpec("ceiling"))
            continue
        base, *variants = raw.split("+")
        name, _, n = base.rpartition("-")
        if name in ("redis", "pubsub"):
            for variant in variants:
                if variant not in VARIANTS and not variant.startswith(FAST_PATH_OFF):
                    raise ValueError(
                        f"unknown variant {variant!r} of {raw!r}: "
                        f"{', '.join(VARIANTS)} or no-<fast path>"
                    )
            specs.append(TargetSpec("project", int(n), name, tuple(variants)))
        elif name == "tutorial" and not variants:
            specs.append(TargetSpec("tutorial", int(n)))
        else:
            raise ValueError(
                f"unknown target {raw!r}: ceiling, tutorial-N, redis-N or pubsub-N "
                "(a project target may add +stock or +no-<fast path>)"
            )
    return specs


@dataclass
class Running:
    """A started target, as the benchmark sees it."""

    url: str  # the room through nginx, ws://…
    join_frame: str | None
    tokens: list[str]
    ws: dict[str, tuple[int, int]]  # name -> (pid, port) of each WebSocket server
    others: dict[str, int] = field(default_factory=dict)  # name -> pid (nginx, redis, …)
    env: dict[str, str] = field(default_factory=dict)
    stack: Stack | None = None  # the project's
    http_url: str = ""  # the project's, through nginx


@contextlib.contextmanager
def start(
    spec: TargetSpec,
    connections: int,
    env: dict[str, str],
    budget: int | None = None,
    spares: int = 0,
):
    """Start `spec` ready for `connections` clients (nginx sized for `budget` WebSockets
    when given; the project with `spares` standby replica slots, for Stack.roll); yields a
    Running."""
    if spec.kind == "project":
        with _project(spec, connections, env, budget, spares) as running:
            yield running
    elif spec.kind == "ceiling":
        with _ceiling(budget) as running:
            yield running
    else:
        with _tutorial(spec) as running:
            yield running


def _resize(nginx: Nginx, budget: int) -> None:
    """Render the Stack's nginx again for `budget` WebSockets (worker_connections from the
    budget, whatever the Stack chose) and reload it (SIGHUP); wait until the old workers
    are gone and new ones run."""
    assert nginx.proc is not None
    nginx.env.pop("NGINX_WORKER_CONNECTIONS", None)
    nginx.env["NGINX_CONNECTION_BUDGET"] = str(budget)
    nginx.render()
    master = psutil.Process(nginx.proc.pid)
    old = {p.pid for p in master.children()}
    os.kill(master.pid, signal.SIGHUP)

    def reloaded() -> bool:
        now = {p.pid for p in master.children()}
        return bool(now) and now.isdisjoint(old)

    wait_until(reloaded, 20, "nginx reload", nginx.proc)


@contextlib.contextmanager
def _project(
    spec: TargetSpec, connections: int, env: dict[str, str], budget: int | None, spares: int = 0
):
    base = free_ports(spec.replicas + spares + 2)
    settings = {"CHAT_CHANNEL_LAYER": spec.layer, "LOG_LEVEL": "WARNING", **env, **spec.env}
    with Stack(
        replicas=spec.replicas, spares=spares, port=base, base_port=base + 1, env=settings
    ) as stack:
        if budget:
            assert stack.nginx is not None
            _resize(stack.nginx, budget)
        tokens_file = stack.root / "bench-tokens.txt"
        stack.manage(
            "create_users",
            *("--count", str(connections), "--prefix", "bench", "--tokens-out", str(tokens_file)),
        )
        tokens = [line.split()[1] for line in tokens_file.read_text().splitlines() if line]
        others = {
            "nginx": stack.nginx.proc.pid,
            "gunicorn": stack.web.pid,
            "redis": stack.redis.proc.pid,
            "postgres": stack.postgres.proc.pid,
        }
        yield Running(
            url=stack.ws_url(ROOM),
            join_frame="user_list",
            tokens=tokens,
            ws={r.name: (r.pid, r.port) for r in stack.serving()},
            others=others,
            env={"CHAT_CHANNEL_LAYER": spec.layer, **env, **spec.env},
            stack=stack,
            http_url=stack.url,
        )


def _nginx(root: Path, ws: list[int], budget: int | None = None) -> Nginx:
    static = root / "static"
    static.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    nobody = f"127.0.0.1:{free_port()}"  # no HTTP tier: only /ws/ is used
    return Nginx(
        root,
        free_port(),
        web=[nobody],
        ws=[f"127.0.0.1:{p}" for p in ws],
        static_root=static,
        extra={"NGINX_CONNECTION_BUDGET": str(budget)} if budget else None,
    ).start()


def _http_ready(port: int) -> bool:
    return port_open(port)


@contextlib.contextmanager
def _ceiling(budget: int | None = None):
    root = Path(tempfile.mkdtemp(prefix="chat-bench-ceiling-"))
    procs: list[Proc] = []
    nginx: Nginx | None = None
    try:
        port = free_port()
        proc = Proc(
            "ceiling",
            [sys.executable, str(BENCH / "ceiling.py"), "--port", str(port)],
            root / "ceiling.log",
        )
        procs.append(proc)
        wait_until(lambda: _http_ready(port), 20, "ceiling", proc)
        nginx = _nginx(root, [port], budget)
        yield Running(
            url=f"ws://127.0.0.1:{nginx.port}/ws/chat/{ROOM}/",
            join_frame="user_list",
            tokens=[""],
            ws={"ceiling": (proc.pid, port)},
            others={"nginx": nginx.proc.pid},
        )
    finally:
        if nginx:
            nginx.stop()
        for proc in procs:
            proc.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _tutorial(spec: TargetSpec):
    root = Path(tempfile.mkdtemp(prefix="chat-bench-tutorial-"))
    redis = Redis(root)
    postgres = Postgres(root)
    procs: list[Proc] = []
    nginx: Nginx | None = None
    try:
        redis.start()
        postgres.start()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE"))},
            "PYTHONPATH": str(BENCH),
            "DJANGO_SETTINGS_MODULE": "tutorial.settings",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
        }
        subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--run-syncdb", "-v", "0"],
            env=env,
            cwd=BENCH,
            check=True,
        )
        ports = []
        for i in range(1, spec.replicas + 1):
            port = free_port()
            proc = Proc(
                f"daphne-{i}",
                [*DAPHNE, "-p", str(port), "tutorial.asgi:application"],
                root / f"daphne-{i}.log",
                env=env,
                cwd=str(BENCH),
            )
            procs.append(proc)
            ports.append(port)
        for proc, port in zip(procs, ports, strict=True):
            wait_until(lambda p=port: _http_ready(p), 30, proc.name, proc)
        nginx = _nginx(root, ports)
        yield Running(
            url=f"ws://127.0.0.1:{nginx.port}/ws/chat/{ROOM}/",
            join_frame=None,
            tokens=[""],
            ws={p.name: (p.pid, port) for p, port in zip(procs, ports, strict=True)},
            others={
                "nginx": nginx.proc.pid,
                "redis": redis.proc.pid,
                "postgres": postgres.proc.pid,
            },
        )
    finally:
        if nginx:
            nginx.stop()
        for proc in procs:
            proc.stop()
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)
