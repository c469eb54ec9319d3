"""`BENCH_STORM=1 make bench`: a join storm, fan-out and a rolling restart at N members.

One run, per target (BENCH_TARGETS, default `ceiling,redis-3`):

1. join storm: BENCH_STORM_CLIENTS token clients (bench/storm_client.py, over
   BENCH_STORM_PROCS processes, BENCH_STORM_INFLIGHT handshakes in flight in total) connect
   at once to one room with `?v=2`, retrying as the browser does; then memory per
   connection, presence frames per member, failed handshakes. The ceiling
   (bench/ceiling.py behind the same nginx) takes the same number of sockets, for the
   "within 2× the ceiling" target.
2. fan-out: BENCH_STORM_FANOUT_RATE messages/s for BENCH_STORM_FANOUT_SECONDS into the
   room; delivery ratio and latency at every member. The project's messages come from its
   HTTP API, and then (BENCH_STORM_SENDER=both, the default) once more from a WebSocket
   sender; the ceiling has no HTTP API, so its come from a WebSocket sender
   (storm_support.WsSender: one more socket in the room, not one of the N members), the
   reference for what relaying N frames a message costs this machine. The ceiling has
   no replicas, so it stops here.
3. rolling restart: under BENCH_STORM_RESTART_RATE messages/s, each replica in turn is
   replaced as a Deployment with maxSurge 1 and maxUnavailable 0 rolls: a replacement
   starts on the stack's standby slot and is ready, then the old replica gets SIGTERM and
   drains (Stack.roll's steps); clients reconnect and resume. Reconnects per client,
   the time from each SIGTERM until every client that replica held has resumed, messages
   lost at the end (every member must have every id posted in phases 2 and 3), and the
   peak load on Redis and PostgreSQL (bench/sampling.py ServiceSampler).

Results: results.json and report.md in the run's folder; --write-doc fills the storm's
generated block of docs/benchmarks.md (bench/storm_report.py).
"""

from __future__ import annotations

import asyncio
import os
import resource
import time
from array import array
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from chatclient import aio, protocol

from bench import sampling, session, storm_report, targets
from bench.client import Pool
from bench.storm_client import StormAgent
from bench.storm_support import (
    HttpSender,
    WsSender,
    log_summary,
    nginx_budget,
    nginx_workers,
    tcp_counters,
)

DEFAULT_TARGETS = "ceiling,redis-3"
# The project's fan-out: `http` (the API, checked against the target), `ws` (a WebSocket
# sender instead, checked), `both` (the API, checked, then a WebSocket sender for reference).
SENDERS = ("http", "ws", "both")
SETTLE_QUIET = 2.0  # seconds without a frame: the storm's presence traffic is over
SETTLE_LIMIT = 180.0
DRAIN_LIMIT = 60.0  # seconds for a phase's deliveries (or the clients' resumes) to arrive
RESTART_LEAD = 3.0  # seconds of messages before the first SIGTERM
RESTART_TAIL = 5.0  # and after the last replica is ready again


def enabled() -> bool:
    return os.environ.get("BENCH_STORM", "") not in ("", "0")


@dataclass
class StormConfig:
    targets: str = DEFAULT_TARGETS
    clients: int = 10_000
    procs: int = 4
    inflight: int = 200
    fanout_rate: float = 1.0
    fanout_seconds: float = 25.0
    restart_rate: float = 2.0
    join_limit: float = 300.0
    sender: str = "both"
    # "join": the join storm alone (for comparing variants' join cost); "all": every phase.
    phases: str = "all"
    message_bytes: int = 40
    out: Path = Path(".")  # the run's folder: the project's logs are copied there

    @classmethod
    def from_env(cls) -> StormConfig:
        env = os.environ.get
        return cls(
            targets=env("BENCH_TARGETS") or DEFAULT_TARGETS,
            clients=int(env("BENCH_STORM_CLIENTS", cls.clients)),
            procs=int(env("BENCH_STORM_PROCS", cls.procs)),
            inflight=int(env("BENCH_STORM_INFLIGHT", cls.inflight)),
            fanout_rate=float(env("BENCH_STORM_FANOUT_RATE", cls.fanout_rate)),
            fanout_seconds=float(env("BENCH_STORM_FANOUT_SECONDS", cls.fanout_seconds)),
            restart_rate=float(env("BENCH_STORM_RESTART_RATE", cls.restart_rate)),
            join_limit=float(env("BENCH_STORM_JOIN_LIMIT", cls.join_limit)),
            sender=_sender(env("BENCH_STORM_SENDER") or cls.sender),
            phases=_phases(env("BENCH_STORM_PHASES") or cls.phases),
        )


def _phases(value: str) -> str:
    if value not in ("join", "all"):
        raise SystemExit(f"BENCH_STORM_PHASES={value!r}: join or all")
    return value


def _sender(value: str) -> str:
    if value not in SENDERS:
        raise SystemExit(f"BENCH_STORM_SENDER={value!r}: one of {', '.join(SENDERS)}")
    return value


# --- helpers ---------------------------------------------------------------------------------


def _split(items: list[str], parts: int) -> list[list[str]]:
    return [items[i::parts] for i in range(parts)]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, max(0, round(q * (len(values) - 1))))]


def _sum_counts(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: Counter = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _statuses(pool: Pool) -> list[dict[str, Any]]:
    return pool.call_all(pool.listeners, "status", [{}] * len(pool.listeners))


def _all(pool: Pool, command: str, **args: Any) -> list[Any]:
    return pool.call_all(pool.listeners, command, [args] * len(pool.listeners))


def _quiet(pool: Pool, quiet: float, limit: float, done: Any = None) -> float:
    """Until `done(statuses)` holds, or no client got a frame for `quiet` seconds (or
    `limit` passed); the seconds it took."""
    return session.wait_quiet(lambda: _statuses(pool), quiet, limit, done)


def _latency(reports: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter]:
    """Latency percentiles over every agent's report, and live deliveries per message id
    (`figures["per_id_us"]`: the sum of their latencies per id)."""
    latencies = array("q")
    per_id: Counter = Counter()
    per_id_us: Counter = Counter()
    for rep in reports:
        chunk = array("q")
        chunk.frombytes(rep["latencies_us"])
        latencies.extend(chunk)
        per_id.update(rep["per_id"])
        per_id_us.update(rep.get("per_id_us", {}))
    ordered = sorted(latencies)

    def ms(q: float) -> float | None:
        value = _pct(ordered, q)
        return None if value is None else value / 1000

    figures = {"p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": ms(1.0)}
    return {"deliveries": len(ordered), **figures, "per_id_us": per_id_us}, per_id


# --- phase 1: the join storm ---------------------------------------------------------------


def warm_up(running: targets.Running, token: str) -> None:
    """One join straight to each WebSocket process, closed again, before the baseline: the
    first join into a room loads code and data once (how much: docs/benchmarks.md, the
    storm's "Join storm"), which is no connection's cost."""

    async def join(port: int) -> None:
        url = protocol.room_url(f"ws://127.0.0.1:{port}", targets.ROOM)
        async with await aio.open_socket(url, token, proxy=None) as ws:
            async for data in ws:
                if protocol.decode(data).get("type") == running.join_frame:
                    break

    for _, port in running.ws.values():
        asyncio.run(join(port))


def join_storm(pool: Pool, running: targets.Running, cfg: StormConfig) -> dict[str, Any]:
    tokens = running.tokens[: cfg.clients]
    if len(tokens) < cfg.clients:  # the ceiling takes any token: one for all
        tokens = (tokens * cfg.clients)[: cfg.clients]
    shares = _split(tokens, len(pool.listeners))
    inflight = [max(1, cfg.inflight * len(s) // cfg.clients) for s in shares]
    warm_up(running, running.tokens[-1])
    time.sleep(1.0)  # its leave, and a presence batch, pass before the baseline
    baseline = {name: sampling.rss(pid) for name, (pid, _) in running.ws.items()}
    cpu = sampling.CpuWindow({n: pid for n, (pid, _) in running.ws.items()} | running.others)
    before = _statuses(pool)
    tcp_before = tcp_counters()
    cpu.start()
    t0 = time.monotonic_ns()
    pool.call_all(
        pool.listeners,
        "start",
        [
            {"url": protocol.with_version(running.url), "tokens": s, "inflight": n, "t0_ns": t0}
            for s, n in zip(shares, inflight, strict=True)
        ],
    )
    joined = 0
    while (time.monotonic_ns() - t0) / 1e9 < cfg.join_limit:
        statuses = _statuses(pool)
        joined = sum(s["joined_once"] for s in statuses)
        if joined >= cfg.clients:
            break
        time.sleep(0.2)
    wall = (time.monotonic_ns() - t0) / 1e9
    server_cpu = cpu.stop()
    tcp = {k: v - tcp_before.get(k, 0) for k, v in tcp_counters().items()}
    after = _statuses(pool)
    client_cpu = [
        round(100 * (a["cpu_s"] - b["cpu_s"]) / wall, 1) for a, b in zip(after, before, strict=True)
    ]
    print(f"   {joined}/{cfg.clients} joined in {wall:.1f} s", flush=True)
    settle = _quiet(pool, SETTLE_QUIET, SETTLE_LIMIT)
    counters = _all(pool, "counters", reset=True)
    joins = _all(pool, "joins")
    joined_at, join_s = array("d"), array("d")
    for j in joins:
        joined_at.frombytes(j["joined_at"])
        join_s.frombytes(j["join_s"])
    at, took = sorted(joined_at), sorted(join_s)
    n = sum(c["n"] for c in counters)
    memory = sampling.memory_per_connection(running.ws, baseline)
    ms = 1000
    return {
        "clients": cfg.clients,
        "joined": len(at),
        "all_joined": len(at) >= cfg.clients,
        "all_joined_s": round(at[-1], 2) if len(at) >= cfg.clients else None,
        "last_join_s": round(at[-1], 2) if at else None,
        "joined_at_p50_s": _round(_pct(at, 0.5), 2),
        "joined_at_p99_s": _round(_pct(at, 0.99), 2),
        "join_p50_ms": _round(_mul(_pct(took, 0.5), ms), 1),
        "join_p99_ms": _round(_mul(_pct(took, 0.99), ms), 1),
        "failed_handshakes": _sum_counts([c["failures"].get("storm", {}) for c in counters]),
        "error_frames": _sum_counts([c["errors"] for c in counters]),
        "presence_per_member_mean": round(sum(c["presence_sum"] for c in counters) / n, 1),
        "presence_per_member_max": max(c["presence_max"] for c in counters),
        "reconnects": sum(c["reconnects_sum"] for c in counters),
        "settle_s": settle,
        "cpu": server_cpu,
        # CPU the WebSocket servers spent per join (handshake to greeting, retries
        # included): what the variants of a target are compared by.
        "ws_cpu_ms_per_join": round(
            sum(server_cpu[name] for name in running.ws) / 100 * wall / max(1, len(at)) * ms, 2
        ),
        "client_cpu": client_cpu,
        "client_peak_rss_mb": [s["peak_rss_mb"] for s in _statuses(pool)],
        "memory": memory,
        "nginx_worker_connections": nginx_workers(running.others["nginx"]),
        "tcp": tcp,
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _mul(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


# --- phase 2: fan-out ----------------------------------------------------------------------


def fanout(
    pool: Pool,
    running: targets.Running,
    cfg: StormConfig,
    sender: HttpSender | WsSender,
    phase: str = "f",
) -> dict[str, Any]:
    """`phase` names the messages in their text: each fan-out of a run has its own."""
    _all(pool, "set_phase", name="fanout")
    members = sum(s["open"] for s in _statuses(pool))
    pids = {n: pid for n, (pid, _) in running.ws.items()} | running.others
    cpu = sampling.CpuWindow(pids)
    before = _statuses(pool)
    cpu.start()
    t0 = time.monotonic()
    sender.start(phase, cfg.fanout_rate, cfg.fanout_seconds)
    sent = sender.wait()
    wall = time.monotonic() - t0
    server_cpu = cpu.stop()
    after = _statuses(pool)
    expected = sent["sent"] * members

    def all_in(statuses: list[dict[str, Any]]) -> bool:
        return sum(s["deliveries"].get(phase, 0) for s in statuses) >= expected

    drain = _quiet(pool, 3.0, DRAIN_LIMIT, all_in)
    if isinstance(sender, WsSender):  # the ids come with the sender's own copies
        sent = sender.echoed()
    lat, per_id = _latency(_all(pool, "phase_report", phase=phase))
    delivered = sum(min(per_id.get(i, 0), members) for i in sent["ids"])
    # Mean latency of each message over its members, in the order sent: whether the p99
    # is a few slow messages (the first one, say) or every message's slow tail.
    by_message = [
        round(lat["per_id_us"][i] / per_id[i] / 1000, 1) if per_id.get(i) else None
        for i in sent["ids"]
    ]
    return {
        "sender": "ws" if isinstance(sender, WsSender) else "http",
        "rate": cfg.fanout_rate,
        "seconds": round(wall, 1),
        "members": members,
        "sent": sent["sent"],
        "post_failures": sent["failures"],
        "unechoed": sent.get("unechoed"),  # WebSocket sender: frames whose copy never came
        "ids": sent["ids"],
        "expected": expected,
        "delivered": delivered,
        "delivery_ratio": round(delivered / expected, 6) if expected else None,
        **{k: lat[k] for k in ("p50_ms", "p99_ms", "max_ms")},
        "message_mean_ms": by_message,
        "drain_s": drain,
        "cpu": server_cpu,
        "client_cpu": [
            round(100 * (a["cpu_s"] - b["cpu_s"]) / wall, 1)
            for a, b in zip(after, before, strict=True)
        ],
    }


def ws_fanout(
    pool: Pool, running: targets.Running, cfg: StormConfig, phase: str = "f"
) -> dict[str, Any]:
    """The fan-out from a WebSocket sender: one more socket in the room (the token no
    member has; the ceiling takes none), opened before and closed after, each time
    waiting for the room to go quiet, so neither its join nor its leave falls into a
    measured phase."""
    sender = WsSender(protocol.with_version(running.url), running.tokens[-1], cfg.message_bytes)
    try:
        sender.open()
        _quiet(pool, SETTLE_QUIET, SETTLE_LIMIT)
        return fanout(pool, running, cfg, sender, phase)
    finally:
        sender.close()
        _quiet(pool, SETTLE_QUIET, SETTLE_LIMIT)


# --- phase 3: rolling restart --------------------------------------------------------------


def rolling_restart(
    pool: Pool,
    running: targets.Running,
    cfg: StormConfig,
    sender: HttpSender,
    services: sampling.ServiceSampler,
    earlier_ids: list[int],
) -> dict[str, Any]:
    stack = running.stack
    assert stack is not None
    # The replicas' own drain timeout (env=, else the caller's environment, else 10 s).
    drain_timeout = float(
        stack.env.get("CHAT_DRAIN_TIMEOUT") or os.environ.get("CHAT_DRAIN_TIMEOUT") or 10
    )
    _all(pool, "counters", reset=True)
    _all(pool, "set_phase", name="restart")
    services.phase = "restart"
    sender.start("r", cfg.restart_rate)
    time.sleep(RESTART_LEAD)
    replicas = []
    # As a Deployment with maxSurge 1 and maxUnavailable 0 rolls: the replacement (on the
    # standby slot) is ready before the old replica gets its SIGTERM and drains.
    for replica in stack.serving():
        started = time.monotonic_ns()
        replacement = min(stack.standby)
        stack.start_replica(replacement)
        sigterm = time.monotonic_ns()
        stack.signal_replica(replica.index)
        code = stack.wait_replica(replica.index, drain_timeout + 30)
        if code is None:  # did not exit: what Kubernetes does after the grace period
            code = stack.kill_replica(replica.index)
        stack.standby.add(replica.index)
        exited = time.monotonic_ns()
        replicas.append(
            {
                "name": replica.name,
                "replacement": f"ws-{replacement}",
                "sigterm_ns": sigterm,
                "exit_code": code,
                "exit_s": round((exited - sigterm) / 1e9, 2),
                "start_s": round((sigterm - started) / 1e9, 2),
            }
        )
        print(
            f"   {replica.name}: replaced by ws-{replacement} (ready after "
            f"{(sigterm - started) / 1e9:.1f} s), exited {code} "
            f"{(exited - sigterm) / 1e9:.1f} s after SIGTERM",
            flush=True,
        )
    time.sleep(RESTART_TAIL)
    sent = sender.stop()

    def back(statuses: list[dict[str, Any]]) -> bool:
        return all(s["open"] == s["members"] and not s["away"] for s in statuses)

    recover = _quiet(pool, 5.0, DRAIN_LIMIT, back)
    services.phase = "after"
    counters = _all(pool, "counters", reset=False)
    lat, _ = _latency(_all(pool, "phase_report", phase="r"))
    finals = _all(pool, "final_report", ids=earlier_ids + sent["ids"])
    episodes = [tuple(e) for f in finals for e in f["episodes"]]
    n = sum(c["n"] for c in counters)
    return {
        "rate": cfg.restart_rate,
        "sent": sent["sent"],
        "post_failures": sent["failures"],
        "replicas": _per_replica(replicas, episodes),
        "other_episodes": sum(1 for e in episodes if e[0] < replicas[0]["sigterm_ns"]),
        "reconnects_per_client_mean": round(sum(c["reconnects_sum"] for c in counters) / n, 2),
        "reconnects_per_client_max": max(c["reconnects_max"] for c in counters),
        "presence_per_member_mean": round(sum(c["presence_sum"] for c in counters) / n, 1),
        "presence_per_member_max": max(c["presence_max"] for c in counters),
        "failed_handshakes": _sum_counts([c["failures"].get("restart", {}) for c in counters]),
        "closes": _sum_counts([c["closes"].get("restart", {}) for c in counters]),
        "recover_s": recover,
        "checked_ids": len(earlier_ids) + sent["sent"],
        "lost": sum(f["missing"] for f in finals),
        "members_missing": sum(f["members_missing"] for f in finals),
        "missed_ids": _sum_counts([f["missed_ids"] for f in finals]),
        "not_open_at_end": sum(f["not_open"] for f in finals),
        "live_p50_ms": lat["p50_ms"],
        "live_p99_ms": lat["p99_ms"],
        "services": services.summary("restart"),
    }


def _per_replica(replicas: list[dict[str, Any]], episodes: list[tuple]) -> list[dict[str, Any]]:
    """Each away episode belongs to the replica whose SIGTERM came last before it began."""
    starts = [r["sigterm_ns"] for r in replicas]
    out = []
    for i, r in enumerate(replicas):
        end = starts[i + 1] if i + 1 < len(starts) else float("inf")
        mine = [e for e in episodes if starts[i] <= e[0] < end]
        resumed = sorted((e[2] - starts[i]) / 1e9 for e in mine if e[2])
        out.append(
            {
                **{k: v for k, v in r.items() if k != "sigterm_ns"},
                "moved": len(mine),
                "resumed": len(resumed),
                "unresumed": len(mine) - len(resumed),
                "close_codes": dict(Counter(str(e[1]) for e in mine)),
                "resumed_p50_s": _round(_pct(resumed, 0.5), 2),
                "all_resumed_s": _round(resumed[-1], 2) if resumed else None,
            }
        )
    return out


# --- one target ------------------------------------------------------------------------------


def bench_target(spec: targets.TargetSpec, cfg: StormConfig) -> dict[str, Any]:
    out: dict[str, Any] = {**spec.describe(), "load_before": sampling.load_average()}
    print(f"\n== storm: {spec.title}, {cfg.clients} clients", flush=True)
    # A standby slot: the rolling restart starts each replacement before the old replica
    # drains, as a Deployment with maxSurge 1 does (Stack.roll).
    spares = 1 if spec.kind == "project" else 0
    with targets.start(
        spec, cfg.clients + 1, {}, nginx_budget(cfg.clients), spares=spares
    ) as running:
        out["env"] = running.env
        services = None
        if running.stack is not None:
            stack = running.stack
            services = sampling.ServiceSampler(
                stack.env["REDIS_URL"],
                stack.env["DATABASE_URL"],
                {"redis": running.others["redis"], "postgres": running.others["postgres"]},
            )
            services.phase = "storm"
            services.start()
        pool = Pool(cfg.procs, StormAgent, sender=False)
        try:
            out["storm"] = join_storm(pool, running, cfg)
            if services is not None:
                out["storm"]["services"] = services.summary("storm")
            _say_storm(out["storm"])
            if cfg.phases == "join":
                pass
            elif running.stack is None or services is None:  # the ceiling: no HTTP API
                out["fanout"] = ws_fanout(pool, running, cfg)
                _say_fanout(out["fanout"])
            else:
                sender = HttpSender(
                    running.http_url, targets.ROOM, running.tokens[-1], cfg.message_bytes
                )
                services.phase = "fanout"
                if cfg.sender == "ws":
                    out["fanout"] = ws_fanout(pool, running, cfg)
                else:
                    out["fanout"] = fanout(pool, running, cfg, sender)
                _say_fanout(out["fanout"])
                if cfg.sender == "both":  # the ceiling's way, for reference (not checked)
                    try:
                        out["fanout_ws"] = ws_fanout(pool, running, cfg, "fw")
                        _say_fanout(out["fanout_ws"])
                    except Exception as exc:  # a reference: the restart still runs
                        out["fanout_ws_error"] = repr(exc)
                        print(f"   fan-out (ws sender) failed: {exc!r}", flush=True)
                out["restart"] = rolling_restart(
                    pool, running, cfg, sender, services, out["fanout"]["ids"]
                )
                _say_restart(out["restart"])
                out["logs"] = log_summary(running.stack, cfg.out / f"logs-{spec.label}")
        finally:
            pool.close()
            if services is not None:
                services.stop()
                out["services_samples"] = services.samples
    out["load_after"] = sampling.load_average()
    return out


def _say_storm(s: dict[str, Any]) -> None:
    print(
        f"   storm: {s['joined']}/{s['clients']} joined, all in {s['all_joined_s']} s, "
        f"join p50 {s['join_p50_ms']} p99 {s['join_p99_ms']} ms, presence/member "
        f"{s['presence_per_member_mean']} (max {s['presence_per_member_max']}), "
        f"failed {s['failed_handshakes']}, ws CPU/join {s['ws_cpu_ms_per_join']} ms, "
        f"client CPU {s['client_cpu']}",
        flush=True,
    )


def _say_fanout(f: dict[str, Any]) -> None:
    print(
        f"   fan-out ({f['sender']} sender): {f['sent']} msgs to {f['members']}, delivered "
        f"{f['delivery_ratio']}, p50 {f['p50_ms']} p99 {f['p99_ms']} ms, "
        f"server CPU {f['cpu']}, client CPU {f['client_cpu']}",
        flush=True,
    )


def _say_restart(r: dict[str, Any]) -> None:
    resumed = [x["all_resumed_s"] for x in r["replicas"]]
    print(
        f"   restart: reconnects/client {r['reconnects_per_client_mean']} "
        f"(max {r['reconnects_per_client_max']}), all resumed {resumed} s after SIGTERM, "
        f"lost {r['lost']}",
        flush=True,
    )


# --- the run ---------------------------------------------------------------------------------


def main(
    out_dir: Path,
    command: str,
    machine: dict[str, Any],
    targets_arg: str | None,
    write_doc: Path | None,
) -> int:
    cfg = StormConfig.from_env()
    cfg.out = out_dir
    if targets_arg:
        cfg.targets = targets_arg
    # Not raised here: the stack's servers must raise their own open-files limits, as they
    # do in `make stack` from a shell with a soft limit of 1024 (the ceiling and the client
    # processes raise theirs too). The run records what it started with.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    specs = targets.parse_targets(cfg.targets)
    results: dict[str, Any] = {
        "mode": "storm",
        "command": command,
        "open_files": {"soft": soft, "hard": hard},
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "machine": machine,
        "targets": [],
    }
    print(f"storm: {cfg.clients} clients, targets {cfg.targets}; results in {out_dir}", flush=True)
    return session.run_targets(
        specs,
        lambda spec: bench_target(spec, cfg),
        results,
        out_dir,
        storm_report.render,
        (lambda text: storm_report.write_doc(write_doc, text)) if write_doc else None,
    )
