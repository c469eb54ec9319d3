"""CPU, memory and connection counts of the processes under test (psutil).

A named process counts with all its descendants (nginx workers, gunicorn workers,
PostgreSQL backends under the runuser wrapper), so "CPU of postgres" is all of it.
CPU is reported in % of one core over a window: 100 = one core busy the whole time.
"""

from __future__ import annotations

import contextlib
import time

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
