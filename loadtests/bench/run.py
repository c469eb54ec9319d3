#!/usr/bin/env python
"""`make bench`: fan-out of the project against its ceiling and its floor, on this machine.

For each target (bench/targets.py) — the project with each channel layer and 1 or 3 ws
replicas, the `websockets` ceiling, the tutorial floor — through nginx:

1. connect the senders, then the largest room's listeners (token-authenticated for the
   project), wait until the join storm is over; idle RSS growth of each WebSocket
   process divided by the connections it holds is the memory per connection;
2. for each room size, largest first (listeners leave to shrink the room):
   - saturation: for BENCH_SAT_SECONDS the senders post as fast as the target delivers,
     with a bounded number of deliveries outstanding (a closed loop, see `steer`);
     deliveries/s at the receivers over the second half is the saturation throughput;
   - fixed rate: BENCH_RATE messages/s from BENCH_SENDERS senders for BENCH_FIXED_SECONDS:
     deliveries/s, p50/p99/max fan-out latency, delivery ratio, CPU of every process.

Results go to .results/bench/<time>/ (results.json, report.md); --write-doc replaces the
generated block of docs/benchmarks.md. The per-user rate limit is raised on the project
(saturation needs more than 5 messages/s per sender); the fixed-rate senders stay within
the default. BENCH_QUICK=1 is a short smoke run (one size, short phases). BENCH_STORM=1
runs bench/storm.py instead: a join storm of thousands, fan-out to them, a rolling restart.

    python loadtests/bench/run.py [--targets ceiling,tutorial-1,redis-3,…] [--write-doc]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import profile, report, sampling, session, storm, targets  # noqa: E402
from bench.client import BUCKET_NS, Pool  # noqa: E402

REPO = HERE.parents[1]
SETTLE_LIMIT = 240.0  # seconds a join storm may take before measuring anyway
DRAIN_LIMIT = 300.0  # seconds a phase's backlog may take to arrive
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


# --- one phase: send, wait for the deliveries, add up -------------------------------------


def wait_quiet(pool: Pool, quiet: float = 1.5, limit: float = 120.0) -> float:
    """Until no client received a frame for `quiet` seconds; the time it took."""
    return session.wait_quiet(pool.status, quiet, limit)


def steer(pool: Pool, phase: str, seconds: float, cfg: Config, members: int) -> list[list]:
    """Keep the target exactly busy: a closed loop on deliveries still owed.

    Every 50 ms the coordinator counts what the receivers got and lets the senders post
    as many messages as keep `owed = sent × members − delivered` under a window of
    BENCH_SAT_WINDOW messages' worth of deliveries (at least 8,000). A target is then
    never idle for want of messages and never holds more than that window in queues:
    its throughput is measured without a backlog that would take minutes to drain,
    and latency stays near window / throughput. Returns (second, owed) samples.
    """
    window = max(cfg.sat_window * members, 8_000)
    started = time.monotonic()
    granted = 0.0
    samples: list[list] = []
    while (elapsed := time.monotonic() - started) < seconds:
        statuses = pool.status()
        delivered = sum(s["deliveries"].get(phase, 0) for s in statuses)
        owed = granted * members - delivered
        credit = (window - owed) / members
        if credit >= 1:
            Pool.call(pool.sender, "grant", messages=credit)
            granted += credit
        if not samples or elapsed - samples[-1][0] >= 1.0:
            samples.append([round(elapsed, 1), round(owed)])
        time.sleep(0.05)
    return samples


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index] / 1000  # µs → ms


def run_phase(
    pool: Pool,
    running: targets.Running,
    cfg: Config,
    phase: str,
    rate: float,
    seconds: float,
    members: int,
    profile_to: Path | None = None,
    controlled: bool = False,
) -> dict[str, Any]:
    pids = {name: pid for name, (pid, _) in running.ws.items()} | running.others
    spy = None
    if profile_to is not None:
        first = next(iter(running.ws.values()))[0]
        spy = profile.start(first, seconds, profile_to)
    cpu = sampling.CpuWindow(pids)
    before = pool.status()
    cpu.start()
    t0 = time.monotonic_ns()
    Pool.call(
        pool.sender,
        "start_send",
        phase=phase,
        rate=max(rate, cfg.sat_cap / members) if controlled else rate,
        seconds=seconds,
        size=cfg.message_bytes,
        credit=controlled,
    )
    steering = steer(pool, phase, seconds, cfg, members) if controlled else []
    sent = Pool.call(pool.sender, "wait_send")
    t1 = time.monotonic_ns()
    server_cpu = cpu.stop()
    after = pool.status()
    drain = wait_quiet(pool, limit=DRAIN_LIMIT)
    reports = pool.reports(phase)
    profiled = None
    if spy is not None and profile_to is not None:
        spy.wait(timeout=60)
        profiled = profile.summarize(profile_to)

    wall = (t1 - t0) / 1e9
    client_cpu = [
        round(100 * (a["cpu_s"] - b["cpu_s"]) / wall, 1) for a, b in zip(after, before, strict=True)
    ]
    new_errors = sum(sum(s["errors"].values()) for s in pool.status()) - sum(
        sum(s["errors"].values()) for s in before
    )
    per_message: dict[tuple[str, int], int] = {}
    latencies = array("q")
    buckets: dict[int, int] = {}
    for rep in reports:
        for sender, seq, n in rep["per_message"]:
            per_message[sender, seq] = per_message.get((sender, seq), 0) + n
        chunk = array("q")
        chunk.frombytes(rep["latencies_us"])
        latencies.extend(chunk)
        for slot, n in rep["buckets"].items():
            buckets[int(slot)] = buckets.get(int(slot), 0) + n
    stored = max(0, sent["sent"] - new_errors)
    expected = stored * members
    delivered = sum(min(n, members) for n in per_message.values())
    duplicates = sum(max(0, n - members) for n in per_message.values())
    # Saturation is measured over its second half, once the loop has filled the queues.
    warm = seconds * 0.5 if controlled else min(1.0, seconds * 0.2)
    first, last = (t0 + int(warm * 1e9)) // BUCKET_NS, t1 // BUCKET_NS
    window = max(1e-6, (last - first) * BUCKET_NS / 1e9)
    in_window = sum(n for slot, n in buckets.items() if first <= slot < last)
    ordered = sorted(latencies)
    return {
        "phase": phase,
        "offered_msgs_per_s": round(sent["sent"] / wall, 1),
        "sent": sent["sent"],
        "sender_late_ticks": sent["late_ticks"],
        "steering": steering,
        "error_frames": new_errors,
        "expected": expected,
        "delivered": delivered,
        "duplicates": duplicates,
        "delivery_ratio": round(delivered / expected, 6) if expected else None,
        "deliveries_per_s": round(in_window / window),
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": percentile(ordered, 1.0),
        "cpu": server_cpu,
        "client_cpu": client_cpu,
        "drain_s": drain,
        **({"profile": profiled} if profiled else {}),
    }


# --- one target -------------------------------------------------------------------------


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def bench_target(spec: targets.TargetSpec, cfg: Config) -> dict[str, Any]:
    biggest = max(cfg.sizes)
    env = {"CHAT_RATE_LIMIT_PER_SECOND": "100000", "CHAT_RATE_LIMIT_BURST": "100000"}
    out: dict[str, Any] = {**spec.describe(), "load_before": sampling.load_average()}
    print(f"\n== {spec.title}", flush=True)
    with targets.start(spec, biggest + cfg.senders, env) as running:
        out["env"] = running.env
        pool = Pool(cfg.client_procs)
        try:
            out.update(_measure(pool, running, cfg, spec))
        finally:
            pool.close()
    out["load_after"] = sampling.load_average()
    return out


def _measure(
    pool: Pool, running: targets.Running, cfg: Config, spec: targets.TargetSpec
) -> dict[str, Any]:
    biggest = max(cfg.sizes)
    out: dict[str, Any] = {}
    baseline = {name: sampling.rss(pid) for name, (pid, _) in running.ws.items()}
    tokens = itertools.cycle(running.tokens)
    started = time.monotonic()
    joined = Pool.call(
        pool.sender,
        "connect",
        urls=[running.url] * cfg.senders,
        tokens=[next(tokens) for _ in range(cfg.senders)],
        join_frame=running.join_frame,
        concurrency=cfg.senders,
    )
    # Listeners join in waves, each waiting for the previous one's join storm to pass:
    # handshakes that arrive during a storm wait behind it and time out (see the doc).
    shares = split(biggest, len(pool.listeners))
    results: list[dict[str, Any]] = []
    done = [0] * len(shares)
    while any(d < n for d, n in zip(done, shares, strict=True)):
        wave = [min(cfg.connect_wave, n - d) for d, n in zip(done, shares, strict=True)]
        results += pool.call_all(
            pool.listeners,
            "connect",
            [
                {
                    "urls": [running.url] * n,
                    "tokens": [next(tokens) for _ in range(n)],
                    "join_frame": running.join_frame,
                    "concurrency": cfg.connect_concurrency,
                }
                for n in wave
            ],
        )
        done = [d + w for d, w in zip(done, wave, strict=True)]
        wait_quiet(pool, quiet=1.0, limit=SETTLE_LIMIT)
    joins = sorted(t for r in [joined, *results] for t in r["join_s"])
    failures: dict[str, int] = {}
    for r in [joined, *results]:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    connected = len(joins)
    settle = wait_quiet(pool, quiet=3.0, limit=SETTLE_LIMIT)
    out["connect"] = {
        "connected": connected,
        "wanted": biggest + cfg.senders,
        "failures": failures,
        "seconds": round(time.monotonic() - started - settle, 1),
        "join_p50_ms": round(1000 * joins[len(joins) // 2], 1) if joins else None,
        "join_p99_ms": round(1000 * joins[int(0.99 * (len(joins) - 1))], 1) if joins else None,
        "settle_s": settle,
        "settled": settle < SETTLE_LIMIT,
    }
    print(f"   connected {connected}/{biggest + cfg.senders}, settled in {settle} s", flush=True)
    memory = sampling.memory_per_connection(running.ws, baseline)
    out["memory"] = memory
    # A few handshakes refused even after retries (HTTP 502 during a join storm) leave
    # the largest room slightly smaller: measured as it is, with its real size.
    if connected < 0.99 * (biggest + cfg.senders):
        out["error"] = f"only {connected} of {biggest + cfg.senders} connections joined"
        return out

    sizes: list[dict[str, Any]] = []
    current = connected - cfg.senders
    per_agent = shares[:]
    for size in sorted(cfg.sizes, reverse=True):
        if size < current:
            cut = split(current - size, len(pool.listeners))
            pool.call_all(pool.listeners, "drop", [{"count": c} for c in cut])
            per_agent = [a - c for a, c in zip(per_agent, cut, strict=True)]
            current = size
            shrunk = wait_quiet(pool, quiet=3.0, limit=SETTLE_LIMIT)
        else:
            shrunk = 0.0
        members = current + cfg.senders
        spy = cfg.profile and spec.kind == "project" and size == biggest
        # Saturation first: its closed loop leaves no backlog, while a fixed rate above
        # what a target delivers does (the floor), and is then drained before going on.
        sat = run_phase(
            pool,
            running,
            cfg,
            f"s{size}",
            cfg.rate,
            cfg.sat_seconds,
            members,
            cfg.out / f"profile-{spec.label}-saturation.txt" if spy else None,
            controlled=True,
        )
        _say(size, "saturation", sat)
        fixed = run_phase(
            pool,
            running,
            cfg,
            f"f{size}",
            cfg.rate,
            cfg.fixed_seconds,
            members,
            cfg.out / f"profile-{spec.label}-fixed.txt" if spy else None,
        )
        _say(size, "fixed", fixed)
        sizes.append(
            {
                "listeners": size,
                "joined_listeners": current,
                "members": members,
                "order": ["saturation", "fixed"],
                "leave_storm_s": shrunk,
                "saturation": sat,
                "fixed": fixed,
            }
        )
    out["sizes"] = sizes
    return out


def _say(size: int, what: str, phase: dict[str, Any]) -> None:
    print(
        f"   {size:>5} listeners {what:<10} {phase['deliveries_per_s']:>7} deliveries/s  "
        f"p50 {phase['p50_ms']} p99 {phase['p99_ms']} max {phase['max_ms']} ms  "
        f"delivered {phase['delivery_ratio']}  client CPU {phase['client_cpu']}",
        flush=True,
    )


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
        | {"drain_limit_s": DRAIN_LIMIT},
        "machine": machine(),
        "targets": [],
    }
    print(f"bench: {len(specs)} targets, sizes {cfg.sizes}; results in {out_dir}", flush=True)
    doc = REPO / "docs" / "benchmarks.md"
    return session.run_targets(
        specs,
        lambda spec: bench_target(spec, cfg),
        results,
        out_dir,
        report.render,
        (lambda text: report.write_doc(doc, text)) if opts.write_doc else None,
    )


if __name__ == "__main__":
    sys.exit(main())
