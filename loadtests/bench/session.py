"""One benchmark run over its targets, shared by `make bench` and its storm mode."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_targets(
    specs: list,
    measure: Callable[[Any], dict[str, Any]],
    results: dict[str, Any],
    out_dir: Path,
    render: Callable[[dict[str, Any]], str],
    write_doc: Callable[[str], None] | None,
) -> int:
    """Measure each target in turn into `results` (saved after each one, so an
    interrupted run keeps what it measured), then write the report and, if asked, the
    doc's generated block. One broken target does not lose the others' figures."""
    for spec in specs:
        try:
            results["targets"].append(measure(spec))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            break
        except Exception as exc:
            print(f"   {spec.label} failed: {exc!r}", flush=True)
            results["targets"].append(
                {"target": spec.label, "title": spec.title, "error": repr(exc)}
            )
        (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    text = render(results)
    (out_dir / "report.md").write_text(text)
    print(f"\n{text}\nresults: {out_dir}/results.json, report: {out_dir}/report.md")
    if write_doc is not None:
        write_doc(text)
    return 0


def wait_quiet(
    statuses: Callable[[], list[dict[str, Any]]],
    quiet: float,
    limit: float,
    done: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> float:
    """Until `done(statuses())` holds, or no client got a frame for `quiet` seconds (or
    `limit` passed); the seconds it took. `statuses()` is one dict per client process,
    with the frames it has received so far."""
    started = time.monotonic()
    last_total, last_change = -1, started
    while time.monotonic() - started < limit:
        now_statuses = statuses()
        if done is not None and done(now_statuses):
            break
        total = sum(s["frames"] for s in now_statuses)
        now = time.monotonic()
        if total != last_total:
            last_total, last_change = total, now
        elif now - last_change >= quiet:
            break
        time.sleep(0.25)
    return round(time.monotonic() - started, 1)
