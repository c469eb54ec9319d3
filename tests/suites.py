"""Run test suites (tests/<name>/) as parallel pytest processes and report each.

Each suite is its own pytest process with its own throwaway Redis and PostgreSQL, so
suites never share state and can run side by side. Output goes to .results/tests/<name>.log
and is printed whole, suite by suite, when all are done, ending with pytest's summary
lines; the exit status is non-zero if any suite failed.

    python tests/suites.py [--jobs N] core stack …
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(name: str, extra: list[str]) -> tuple[str, int, float, Path]:
    log = ROOT / ".results" / "tests" / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", f"tests/{name}", "-p", "no:cacheprovider", *extra],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return name, code, time.monotonic() - started, log


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("suites", nargs="+")
    opts, extra = parser.parse_known_args()
    missing = [s for s in opts.suites if not (ROOT / "tests" / s).is_dir()]
    if missing:
        print(f"no such suite: {', '.join(missing)}", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(opts.jobs) as pool:
        results = list(pool.map(lambda s: run(s, extra), opts.suites))
    failed = []
    for name, code, seconds, log in results:
        print(
            f"\n===== suite {name}: exit {code} in {seconds:.0f} s ({log.relative_to(ROOT)}) ====="
        )
        print(log.read_text(errors="replace"), end="")
        if code:
            failed.append(name)
    print("\n===== summary =====")
    for name, code, seconds, log in results:
        last = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        status = "ok" if code == 0 else "FAILED"
        print(f"{name:>12}: {status} ({seconds:.0f} s) {last[0] if last else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
