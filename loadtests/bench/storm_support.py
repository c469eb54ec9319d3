"""What the storm (bench/storm.py) needs around the clients: a sender that survives the
replicas' restarts, nginx's sizing and connections, the kernel's accept-queue counters,
and a summary of what the servers logged.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

# --- the sender: the HTTP API, so it survives every replica's restart ------------------------


class HttpSender:
    """Posts `b <phase> http <seq> <sent ns> xxx…` messages through nginx to the HTTP API
    at a steady rate, in a thread, and keeps the id of every stored message."""

    def __init__(self, base_url: str, room: str, token: str, size: int) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = f"/api/rooms/{room}/messages"
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.filler = "x" * size
        self.conn: http.client.HTTPConnection | None = None
        self.seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.result: dict[str, Any] = {}

    def start(self, phase: str, rate: float, seconds: float = float("inf")) -> None:
        self._stop.clear()
        self.result = {"ids": [], "failures": Counter(), "late_ticks": 0}
        self._thread = threading.Thread(target=self._run, args=(phase, rate, seconds), daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Stop (or wait for the end of `seconds`); what was sent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        return {
            "sent": len(self.result["ids"]),
            "ids": self.result["ids"],
            "failures": dict(self.result["failures"]),
            "late_ticks": self.result["late_ticks"],
        }

    def wait(self) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join()
        return self.stop()

    def _run(self, phase: str, rate: float, seconds: float) -> None:
        started = due = time.monotonic()
        while time.monotonic() - started < seconds and not self._stop.is_set():
            delay = due - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if delay < -0.1:
                self.result["late_ticks"] += 1
            self._post(phase)
            due += 1.0 / rate

    def _post(self, phase: str) -> None:
        self.seq += 1
        text = f"b {phase} http {self.seq} {time.monotonic_ns()} {self.filler}"
        body = json.dumps({"message": text})
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            self.conn.request("POST", self.path, body=body, headers=self.headers)
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.result["failures"][type(exc).__name__] += 1
            with contextlib.suppress(Exception):
                assert self.conn is not None
                self.conn.close()
            self.conn = None
            return
        if response.status == 201:
            self.result["ids"].append(json.loads(payload)["id"])
        else:
            self.result["failures"][f"HTTP {response.status}"] += 1


# --- nginx and the kernel ------------------------------------------------------------------


def nginx_budget(clients: int) -> int:
    """WebSockets to size nginx for: one per client plus headroom, but never more than one
    worker's descriptors can hold (worker_rlimit_nofile = 2 × budget + 2048): without
    CAP_SYS_RESOURCE nginx cannot go past the hard limit (it only logs an alert), and
    beyond it the sockets rely on being spread over nginx's two workers."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = clients + 100
    if hard == resource.RLIM_INFINITY:
        return wanted
    return max(64, min(wanted, (hard - 2048) // 2))


def tcp_counters() -> dict[str, int]:
    """The kernel's counters of full listen queues (a SYN dropped, retried by the client a
    second later): how often a server's accept backlog overflowed, machine-wide."""
    keep = ("ListenOverflows", "ListenDrops", "TCPSynRetrans")
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/netstat").read_text().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                found = dict(zip(names.split()[1:], values.split()[1:], strict=False))
                return {k: int(found[k]) for k in keep if k in found}
    return {}


def nginx_workers(pid: int) -> list[int]:
    """Open TCP connections of each nginx worker (a proxied socket is two)."""
    out = []
    with contextlib.suppress(psutil.Error):
        for worker in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                out.append(
                    sum(1 for c in worker.net_connections("tcp") if c.status == "ESTABLISHED")
                )
    return out


# --- logs ----------------------------------------------------------------------------------


def log_summary(stack: Any, keep: Path) -> dict[str, Any]:
    """What nginx answered to WebSocket handshakes (status counts from its access log, a
    socket is logged when it ends) and the warnings the servers logged, most frequent
    first. The logs are copied to `keep` (the stack's folder goes when it stops)."""
    logs = stack.logs()
    keep.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        shutil.copyfile(path, keep / f"{name}.log")
    statuses: Counter = Counter()
    access = logs.get("nginx-access")
    if access:
        for line in access.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if str(entry.get("uri", "")).startswith("/ws/"):
                    statuses[str(entry.get("status"))] += 1
    warnings: Counter = Counter()
    for name, path in logs.items():
        if name.startswith("ws-") or name in ("web", "nginx"):
            for line in path.read_text(errors="replace").splitlines():
                key = _warning(name, line)
                if key:
                    warnings[key] += 1
    return {"ws_statuses": dict(statuses), "warnings": dict(warnings.most_common(15))}


def _warning(name: str, line: str) -> str | None:
    """`name: message` of a WARNING or worse line (JSON from the app, text from nginx)."""
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            level = str(entry.get("level", "")).upper()
            if level in ("WARNING", "ERROR", "CRITICAL"):
                message = str(entry.get("message", ""))[:90]
                return f"{name.split('-')[0]}: {level} {message}"
        return None
    for level in ("[warn]", "[error]", "[crit]", "[alert]"):
        if level in line:
            message = line.split(level, 1)[1].split(", client:")[0]
            message = re.sub(r"^[^*]*\*\d+ ", "", message)  # pid#tid: *connection
            return f"{name}: {level} {message[:90]}"
    return None
