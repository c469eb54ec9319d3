#!/usr/bin/env python
"""`make bench`: fan-out of the project against its ceiling and its floor, on this machine.

For each target (bench/targets.py) — the project with each channel layer and 1 or 3 ws
replicas, the `websockets` ceiling, the tutorial floor — through nginx:

1. connect the senders, then the largest room's listeners (token-authenticated for the
   project), wait until the join storm is over; idle RSS growth of each WebSocket
   process divided by the connections it holds is the memory per connection;
2. for each room size, largest first (listeners leave to shrink the room):
   - saturation: for BENCH_SAT_SECONDS the senders post as fast as the target delivers,
     with a bounded number of deliveries outstanding (a closed loop, see phases.steer);
     deliveries/s at the receivers over the second half is the saturation throughput;
   - fixed rate: BENCH_RATE messages/s from BENCH_SENDERS senders for BENCH_FIXED_SECONDS:
     deliveries/s, p50/p99/max fan-out latency, delivery ratio, CPU of every process.

This file is the command line (options, BENCH_* variables, the run's record); the
phases are in bench/phases.py, the agents in bench/client.py.

Results go to .results/bench/<time>/ (results.json, report.md); --write-doc replaces the
generated block of docs/benchmarks.md. The per-user rate limit is raised on the project
(saturation needs more than 5 messages/s per sender); the fixed-rate senders stay within
the default. BENCH_QUICK=1 is a short smoke run (one size, short phases). BENCH_STORM=1
runs bench/storm.py instead: a join storm of thousands, fan-out to them, a rolling restart.

    python loadtests/bench/run.py [--targets ceiling,tutorial-1,redis-3,…] [--write-doc]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import phases, profile, report, session, storm, targets  # noqa: E402

REPO = HERE.parents[1]
DEFAULT_TARGETS = "ceiling,tutorial-1,tutorial-3,redis-1,redis-3,pubsub-1,pubsub-3"


@dataclass
class Config:
    targets: str = DEFAULT_TARGETS
    sizes: tuple[int, ...] = (100, 500, 1000)
    rate: float = 10.0
    senders: int = 5
    client_procs: int = 2
    fixed_seconds: float = 20.0
    sat_seconds: float = 16.0
    sat_cap: float = 60000.0
    sat_window: int = 16
    message_bytes: int = 40
    connect_concurrency: int = 25
    connect_wave: int = 100  # per listener process
    quick: bool = False
    profile: bool = False
    out: Path = Path(".")

    @classmethod
    def from_env(cls) -> Config:
        quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        cfg = cls(quick=quick)
        if quick:
            cfg.sizes, cfg.fixed_seconds, cfg.sat_seconds = (100,), 8.0, 8.0
        env = os.environ.get
        cfg.targets = env("BENCH_TARGETS", cfg.targets)
        if env("BENCH_SIZES"):
            cfg.sizes = tuple(int(s) for s in env("BENCH_SIZES", "").split(","))
        cfg.rate = float(env("BENCH_RATE", cfg.rate))
        cfg.senders = int(env("BENCH_SENDERS", cfg.senders))
        cfg.client_procs = int(env("BENCH_CLIENT_PROCS", cfg.client_procs))
        cfg.connect_wave = int(env("BENCH_CONNECT_WAVE", cfg.connect_wave))
        cfg.connect_concurrency = int(env("BENCH_CONNECT_CONCURRENCY", cfg.connect_concurrency))
        cfg.fixed_seconds = float(env("BENCH_FIXED_SECONDS", cfg.fixed_seconds))
        cfg.sat_seconds = float(env("BENCH_SAT_SECONDS", cfg.sat_seconds))
        cfg.sat_cap = float(env("BENCH_SAT_CAP", cfg.sat_cap))
        cfg.sat_window = int(env("BENCH_SAT_WINDOW", cfg.sat_window))
        cfg.profile = env("BENCH_PROFILE", "") not in ("", "0")
        return cfg


# --- the machine -------------------------------------------------------------------------


def _run(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({argv[0]}: {exc})"
    return (done.stdout + done.stderr).strip()


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    sys.path.insert(0, str(REPO / "tools"))
    from localstack.servers import PG_DIRS, binary

    packages = ["django", "channels", "channels-redis", "daphne", "redis", "websockets", "psutil"]
    return {
        "lscpu": _run(["lscpu"]),
        "free": _run(["free", "-m"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {p: version(p) for p in packages},
        "redis": _run(["redis-server", "--version"]),
        "postgres": _run([binary("postgres", *PG_DIRS), "--version"]),
        "nginx": _run(["nginx", "-v"]),
        # What was measured: the app is started from this working tree.
        "commit": _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "app_changes": _run(["git", "-C", str(REPO), "status", "--short", "app"]),
    }


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwind: every target's context manager stops its servers


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started in the background (SIG_IGN)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default=None, help=f"default: {DEFAULT_TARGETS}")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--write-doc", action="store_true", help="update docs/benchmarks.md")
    opts = parser.parse_args(argv)
    cfg = Config.from_env()
    if opts.targets:
        cfg.targets = opts.targets
    specs = targets.parse_targets(cfg.targets)
    out_dir = opts.out or REPO / ".results" / "bench" / time.strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.out = out_dir
    command = " ".join(
        [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
        + [".venv/bin/python loadtests/bench/run.py", *map(shlex.quote, sys.argv[1:])]
    )
    if storm.enabled():  # BENCH_STORM=1: join storm, fan-out and rolling restart at N
        doc = REPO / "docs" / "benchmarks.md" if opts.write_doc else None
        return storm.main(out_dir, command, machine(), opts.targets, doc)
    if cfg.profile and profile.available() is None:
        print("BENCH_PROFILE=1 but py-spy is not installed: no profiles", flush=True)
        cfg.profile = False
    results: dict[str, Any] = {
        "command": command,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"}
        | {"drain_limit_s": phases.DRAIN_LIMIT},
        "machine": machine(),
        "targets": [],
    }
    print(f"bench: {len(specs)} targets, sizes {cfg.sizes}; results in {out_dir}", flush=True)
    doc = REPO / "docs" / "benchmarks.md"
    return session.run_targets(
        specs,
        lambda spec: phases.bench_target(spec, cfg),
        results,
        out_dir,
        report.render,
        (lambda text: report.write_doc(doc, text)) if opts.write_doc else None,
    )


if __name__ == "__main__":
    sys.exit(main())
