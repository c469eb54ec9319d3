"""Where a WebSocket process spends its time under load: py-spy, when it is installed.

BENCH_PROFILE=1 records one replica during each project target's saturation phase at
the largest room size (`py-spy record --format raw`, the collapsed stacks), and the
benchmark keeps the functions with the most samples: inclusive (on the stack) and self
(the frame running). py-spy is a profiling tool, not a dependency of the project:
install it into the venv by hand (`.tools/bin/uv pip install --python .venv/bin/python
py-spy`); without it the benchmark runs unprofiled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path


def available() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen | None:
    exe = available()
    if exe is None:
        return None
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    argv += ["--rate", "100", "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _short(frame: str) -> str:
    """'send (daphne/ws_protocol.py:123)' -> 'send (daphne/ws_protocol.py)'."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/app/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


def summarize(raw: Path, top: int = 60) -> dict[str, object]:
    """Share of samples per function, inclusive and self, from collapsed stacks."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    if not raw.exists():
        return {"samples": 0}
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    share = lambda c: [[f, round(100 * n / total, 1)] for f, n in c.most_common(top)]  # noqa: E731
    return {"samples": total, "inclusive_pct": share(inclusive), "self_pct": share(own)}
