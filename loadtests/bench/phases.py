"""The phases of one `make bench` target, each a small function the coordinator calls.

1. `connect`: the senders, then the largest room's listeners in waves, each wave's join
   storm passing before the next; the join figures and memory per idle connection;
2. per room size, largest first (`shrink`: listeners leave): `saturation`, a closed loop
   (`steer`) that keeps the target exactly busy, then `fixed_rate`. Both are `run_phase`:
   send, wait for the deliveries, add up (`tally`).

The agents (bench/client.py) do the sending and receiving; results go to run.py.
"""

from __future__ import annotations

import itertools
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import profile, sampling, session, targets
from bench.client import BUCKET_NS, Pool

if TYPE_CHECKING:
    from bench.run import Config

SETTLE_LIMIT = 240.0  # seconds a join storm may take before measuring anyway
DRAIN_LIMIT = 300.0  # seconds a phase's backlog may take to arrive


def bench_target(spec: targets.TargetSpec, cfg: Config) -> dict[str, Any]:
    """Start the target, measure it with a fresh pool of client processes, stop it."""
    biggest = max(cfg.sizes)
    env = {"CHAT_RATE_LIMIT_PER_SECOND": "100000", "CHAT_RATE_LIMIT_BURST": "100000"}
    out: dict[str, Any] = {**spec.describe(), "load_before": sampling.load_average()}
    print(f"\n== {spec.title}", flush=True)
    with targets.start(spec, biggest + cfg.senders, env) as running:
        out["env"] = running.env
        pool = Pool(cfg.client_procs)
        try:
            out.update(measure(pool, running, cfg, spec))
        finally:
            pool.close()
    out["load_after"] = sampling.load_average()
    return out


def measure(
    pool: Pool, running: targets.Running, cfg: Config, spec: targets.TargetSpec
) -> dict[str, Any]:
    wanted = max(cfg.sizes) + cfg.senders
    baseline = {name: sampling.rss(pid) for name, (pid, _) in running.ws.items()}
    joined = connect(pool, running, cfg)
    connected = joined["connected"]
    print(f"   connected {connected}/{wanted}, settled in {joined['settle_s']} s", flush=True)
    out: dict[str, Any] = {
        "connect": joined,
        "memory": sampling.memory_per_connection(running.ws, baseline),
    }
    # A few handshakes refused even after retries (HTTP 502 during a join storm) leave
    # the largest room slightly smaller: measured as it is, with its real size.
    if connected < 0.99 * wanted:
        out["error"] = f"only {connected} of {wanted} connections joined"
        return out
    out["sizes"] = room_sizes(pool, running, cfg, spec, connected - cfg.senders)
    return out


# --- joining ---------------------------------------------------------------------------


def connect(pool: Pool, running: targets.Running, cfg: Config) -> dict[str, Any]:
    """The senders, then the listeners; the join figures once the room is quiet."""
    wanted = max(cfg.sizes) + cfg.senders
    tokens = itertools.cycle(running.tokens)
    started = time.monotonic()
    results = [
        connect_senders(pool, running, cfg, tokens),
        *connect_listeners(pool, running, cfg, tokens),
    ]
    joins = sorted(t for r in results for t in r["join_s"])
    failures: dict[str, int] = {}
    for r in results:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    settle = wait_quiet(pool, quiet=3.0, limit=SETTLE_LIMIT)
    return {
        "connected": len(joins),
        "wanted": wanted,
        "failures": failures,
        "seconds": round(time.monotonic() - started - settle, 1),
        "join_p50_ms": round(1000 * joins[len(joins) // 2], 1) if joins else None,
        "join_p99_ms": round(1000 * joins[int(0.99 * (len(joins) - 1))], 1) if joins else None,
        "settle_s": settle,
        "settled": settle < SETTLE_LIMIT,
    }


def connect_senders(
    pool: Pool, running: targets.Running, cfg: Config, tokens: Iterator[str]
) -> dict[str, Any]:
    return Pool.call(
        pool.sender,
        "connect",
        urls=[running.url] * cfg.senders,
        tokens=[next(tokens) for _ in range(cfg.senders)],
        join_frame=running.join_frame,
        concurrency=cfg.senders,
    )


def connect_listeners(
    pool: Pool, running: targets.Running, cfg: Config, tokens: Iterator[str]
) -> list[dict[str, Any]]:
    """Listeners join in waves, each waiting for the previous one's join storm to pass:
    handshakes that arrive during a storm wait behind it and time out (see the doc)."""
    shares = split(max(cfg.sizes), len(pool.listeners))
    results: list[dict[str, Any]] = []
    done = [0] * len(shares)
    while any(d < n for d, n in zip(done, shares, strict=True)):
        wave = [min(cfg.connect_wave, n - d) for d, n in zip(done, shares, strict=True)]
        args = [
            {
                "urls": [running.url] * n,
                "tokens": [next(tokens) for _ in range(n)],
                "join_frame": running.join_frame,
                "concurrency": cfg.connect_concurrency,
            }
            for n in wave
        ]
        results += pool.call_all(pool.listeners, "connect", args)
        done = [d + w for d, w in zip(done, wave, strict=True)]
        wait_quiet(pool, quiet=1.0, limit=SETTLE_LIMIT)
    return results


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def wait_quiet(pool: Pool, quiet: float = 1.5, limit: float = 120.0) -> float:
    """Until no client received a frame for `quiet` seconds; the time it took."""
    return session.wait_quiet(pool.status, quiet, limit)


# --- room sizes ----------------------------------------------------------------------------


def room_sizes(
    pool: Pool, running: targets.Running, cfg: Config, spec: targets.TargetSpec, current: int
) -> list[dict[str, Any]]:
    """Each room size, largest first: listeners leave to shrink the room, then it is
    measured at saturation and at the fixed rate."""
    sizes: list[dict[str, Any]] = []
    for size in sorted(cfg.sizes, reverse=True):
        shrunk = 0.0
        if size < current:
            shrunk = shrink(pool, current - size)
            current = size
        sizes.append(one_size(pool, running, cfg, spec, size, current, shrunk))
    return sizes


def shrink(pool: Pool, count: int) -> float:
    """`count` listeners leave; the seconds their leave storm took to pass."""
    cut = split(count, len(pool.listeners))
    pool.call_all(pool.listeners, "drop", [{"count": c} for c in cut])
    return wait_quiet(pool, quiet=3.0, limit=SETTLE_LIMIT)


def one_size(
    pool: Pool,
    running: targets.Running,
    cfg: Config,
    spec: targets.TargetSpec,
    size: int,
    current: int,
    shrunk: float,
) -> dict[str, Any]:
    members = current + cfg.senders
    spy = cfg.profile and spec.kind == "project" and size == max(cfg.sizes)

    def profile_to(what: str) -> Path | None:
        return cfg.out / f"profile-{spec.label}-{what}.txt" if spy else None

    # Saturation first: its closed loop leaves no backlog, while a fixed rate above what
    # a target delivers does (the floor), and is then drained before going on.
    sat = saturation(pool, running, cfg, size, members, profile_to("saturation"))
    fixed = fixed_rate(pool, running, cfg, size, members, profile_to("fixed"))
    return {
        "listeners": size,
        "joined_listeners": current,
        "members": members,
        "order": ["saturation", "fixed"],
        "leave_storm_s": shrunk,
        "saturation": sat,
        "fixed": fixed,
    }


def saturation(
    pool: Pool,
    running: targets.Running,
    cfg: Config,
    size: int,
    members: int,
    profile_to: Path | None,
) -> dict[str, Any]:
    figures = run_phase(
        pool, running, cfg, f"s{size}", cfg.rate, cfg.sat_seconds, members, profile_to, True
    )
    _say(size, "saturation", figures)
    return figures


def fixed_rate(
    pool: Pool,
    running: targets.Running,
    cfg: Config,
    size: int,
    members: int,
    profile_to: Path | None,
) -> dict[str, Any]:
    figures = run_phase(
        pool, running, cfg, f"f{size}", cfg.rate, cfg.fixed_seconds, members, profile_to
    )
    _say(size, "fixed", figures)
    return figures


def _say(size: int, what: str, phase: dict[str, Any]) -> None:
    print(
        f"   {size:>5} listeners {what:<10} {phase['deliveries_per_s']:>7} deliveries/s  "
        f"p50 {phase['p50_ms']} p99 {phase['p99_ms']} max {phase['max_ms']} ms  "
        f"delivered {phase['delivery_ratio']}  client CPU {phase['client_cpu']}",
        flush=True,
    )


# --- one phase: send, wait for the deliveries, add up -------------------------------------


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
    """Send `phase`'s messages for `seconds` (at `rate`, or `controlled` by `steer`),
    wait until their deliveries stop arriving, and add up what every agent received."""
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
    new_errors = _errors(pool.status()) - _errors(before)
    # Saturation is measured over its second half, once the loop has filled the queues.
    warm = seconds * 0.5 if controlled else min(1.0, seconds * 0.2)
    stored = max(0, sent["sent"] - new_errors)
    return {
        "phase": phase,
        "offered_msgs_per_s": round(sent["sent"] / wall, 1),
        "sent": sent["sent"],
        "sender_late_ticks": sent["late_ticks"],
        "steering": steering,
        "error_frames": new_errors,
        **tally(reports, stored, members, t0 + int(warm * 1e9), t1),
        "cpu": server_cpu,
        "client_cpu": [
            round(100 * (a["cpu_s"] - b["cpu_s"]) / wall, 1)
            for a, b in zip(after, before, strict=True)
        ],
        "drain_s": drain,
        **({"profile": profiled} if profiled else {}),
    }


def _errors(statuses: list[dict[str, Any]]) -> int:
    return sum(sum(s["errors"].values()) for s in statuses)


def tally(
    reports: list[dict[str, Any]], stored: int, members: int, start_ns: int, end_ns: int
) -> dict[str, Any]:
    """Every agent's deliveries of one phase, added up: each of the `stored` messages is
    due once per member; deliveries/s counts the arrivals from `start_ns` to `end_ns`."""
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
    expected = stored * members
    delivered = sum(min(n, members) for n in per_message.values())
    first, last = start_ns // BUCKET_NS, end_ns // BUCKET_NS
    window = max(1e-6, (last - first) * BUCKET_NS / 1e9)
    in_window = sum(n for slot, n in buckets.items() if first <= slot < last)
    ordered = sorted(latencies)
    return {
        "expected": expected,
        "delivered": delivered,
        "duplicates": sum(max(0, n - members) for n in per_message.values()),
        "delivery_ratio": round(delivered / expected, 6) if expected else None,
        "deliveries_per_s": round(in_window / window),
        "p50_ms": percentile(ordered, 0.50),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": percentile(ordered, 1.0),
    }


def percentile(values: list[int], q: float) -> float | None:
    if not values:
        return None
    index = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[index] / 1000  # µs → ms
