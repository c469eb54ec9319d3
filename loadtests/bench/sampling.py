"""CPU, memory and connection counts of the processes under test (psutil), and the load
on Redis and PostgreSQL over time (ServiceSampler).

A named process counts with all its descendants (nginx workers, gunicorn workers,
PostgreSQL backends under the runuser wrapper), so "CPU of postgres" is all of it.
CPU is reported in % of one core over a window: 100 = one core busy the whole time.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_by_pid(pid: int) -> dict[int, float]:
    """CPU seconds of the process and each descendant, by pid."""
    out = {}
    for proc in _tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = proc.cpu_times()
            out[proc.pid] = times.user + times.system
    return out


def cpu_seconds(pid: int) -> float:
    return sum(cpu_by_pid(pid).values())


def rss(pid: int) -> int:
    """Resident memory of the process itself (not its children), bytes."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        return psutil.Process(pid).memory_info().rss
    return 0


def established(pid: int, port: int) -> int:
    """Open TCP connections accepted on `port` by the process (its WebSocket clients)."""
    with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
        return sum(
            1
            for c in psutil.Process(pid).net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
        )
    return 0


class CpuWindow:
    """CPU % per named process between `start()` and `stop()`."""

    def __init__(self, pids: dict[str, int]):
        self.pids = pids
        self.began: dict[str, dict[int, float]] = {}
        self.t0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.began = {name: cpu_by_pid(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        """Per pid (children come and go: PostgreSQL backends); one that exited during
        the window is missing, so a figure can be low, never negative."""
        wall = max(1e-6, time.monotonic() - self.t0)
        out = {}
        for name, pid in self.pids.items():
            began = self.began[name]
            spent = sum(t - began.get(p, 0.0) for p, t in cpu_by_pid(pid).items())
            out[name] = round(100 * spent / wall, 1)
        return out


def load_average() -> tuple[float, float, float]:
    return psutil.getloadavg()


class ServiceSampler:
    """Redis and PostgreSQL load, once a second in a thread, each sample tagged with the
    coordinator's current `phase`: what a storm or a rolling restart costs the shared
    services, which every replica leans on at once.

    Redis: commands processed per second (delta of `total_commands_processed`) and its own
    `instantaneous_ops_per_sec`. PostgreSQL: transactions committed per second
    (`pg_stat_database`, which backends update at most once a second, so single samples
    are lumpy and the phase mean is the steadier figure) and write transactions per second
    (transaction ids assigned, exact). CPU % of one core of each process tree.
    """

    def __init__(self, redis_url: str, database_url: str, pids: dict[str, int]) -> None:
        import psycopg
        import redis

        self.redis = redis.Redis.from_url(redis_url, socket_timeout=2)
        self.pg = psycopg.connect(database_url, autocommit=True, connect_timeout=5)
        self.pids = pids
        self.phase = ""
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self.pg.close()
        with contextlib.suppress(Exception):
            self.redis.close()

    def _read(self) -> dict[str, float]:
        info = self.redis.info("stats")
        row = self.pg.execute(
            "SELECT xact_commit, pg_snapshot_xmax(pg_current_snapshot())::text::bigint "
            "FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert row is not None
        out = {
            "redis_cmds": float(info["total_commands_processed"]),
            "redis_ops_now": float(info["instantaneous_ops_per_sec"]),
            "pg_commits": float(row[0]),
            "pg_writes": float(row[1]),
        }
        for name, pid in self.pids.items():
            out[f"cpu_{name}"] = cpu_seconds(pid)
        return out

    def _run(self) -> None:
        last, t_last = None, time.monotonic()
        while not self._stop.wait(1.0):
            try:
                now, t_now = self._read(), time.monotonic()
            except Exception:  # a service restarting: skip the sample
                last = None
                continue
            if last is not None:
                dt = max(1e-6, t_now - t_last)
                sample = {
                    "t": round(t_now, 1),
                    "phase": self.phase,
                    "redis_cmds_per_s": round((now["redis_cmds"] - last["redis_cmds"]) / dt),
                    "redis_ops_per_s": round(now["redis_ops_now"]),
                    "pg_commits_per_s": round((now["pg_commits"] - last["pg_commits"]) / dt),
                    "pg_writes_per_s": round((now["pg_writes"] - last["pg_writes"]) / dt),
                }
                for name in self.pids:
                    spent = now[f"cpu_{name}"] - last[f"cpu_{name}"]
                    sample[f"{name}_cpu"] = round(max(0.0, 100 * spent / dt), 1)
                self.samples.append(sample)
            last, t_last = now, t_now

    def summary(self, phase: str) -> dict[str, Any]:
        """Peak and mean of each figure over the samples of `phase`."""
        rows = [s for s in self.samples if s["phase"] == phase]
        keys = [k for k in (rows[0] if rows else {}) if k not in ("t", "phase")]
        return {
            "samples": len(rows),
            **{
                k: {
                    "peak": max(r[k] for r in rows),
                    "mean": round(sum(r[k] for r in rows) / len(rows), 1),
                }
                for k in keys
            },
        }


def memory_per_connection(ws: dict[str, tuple[int, int]], baseline: dict[str, int]) -> dict:
    """RSS growth of each WebSocket process since `baseline`, per connection it holds."""
    memory = {}
    for name, (pid, port) in ws.items():
        conns = established(pid, port)
        grown = rss(pid) - baseline[name]
        memory[name] = {
            "connections": conns,
            "rss_mb": round(rss(pid) / 2**20, 1),
            "rss_growth_mb": round(grown / 2**20, 1),
            "kib_per_connection": round(grown / conns / 1024, 1) if conns else None,
        }
    return memory
