"""Pass or fail: a run exits non-zero when a stated criterion is missed.

Checked where the statistics end up (the master, or the only process) when Locust
quits, from the same numbers the reports show:

- delivery ratio of each delivery row (DELIVER fanout / private) ≥ --min-delivery-ratio;
  a row that expected deliveries and measured none fails too;
- p99 latency of each delivery row ≤ --max-p99 ms;
- every other row together (connects, joins, sends, pages, error frames…):
  failures / requests ≤ --max-error-ratio.

The verdict is logged and, with --results, written to criteria.json beside the reports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from . import options
from .tracking import DELIVER

log = logging.getLogger(__name__)


def evaluate(environment: Environment, rows: tuple[str, ...]) -> dict[str, Any]:
    opts = options.get(environment)
    stats = environment.stats
    checks: list[dict[str, Any]] = []
    for name in rows:
        entry = stats.entries.get((name, DELIVER))
        requests = entry.num_requests if entry else 0
        failures = entry.num_failures if entry else 0
        ratio = (requests - failures) / requests if requests else None
        p99 = entry.get_response_time_percentile(0.99) if requests and entry else None
        checks.append(
            {
                "criterion": f"{name} delivery ratio ≥ {opts.min_delivery_ratio:g}",
                "value": ratio,
                "expected": requests,
                "missed_or_late": failures,
                "ok": ratio is not None and ratio >= opts.min_delivery_ratio,
            }
        )
        checks.append(
            {
                "criterion": f"{name} p99 ≤ {opts.max_p99:g} ms",
                "value": p99,
                "ok": p99 is not None and p99 <= opts.max_p99,
            }
        )
    others = [e for (n, method), e in stats.entries.items() if method != DELIVER]
    requests = sum(e.num_requests for e in others)
    failures = sum(e.num_failures for e in others)
    error_ratio = failures / requests if requests else 0.0
    checks.append(
        {
            "criterion": f"other requests failed ≤ {opts.max_error_ratio:g}",
            "value": error_ratio,
            "requests": requests,
            "failures": failures,
            "ok": error_ratio <= opts.max_error_ratio,
        }
    )
    crashes = len(environment.runner.exceptions) if environment.runner else 0
    checks.append({"criterion": "no exceptions in user code", "value": crashes, "ok": crashes == 0})
    errors = {e.to_name(): e.occurrences for e in stats.errors.values()}
    return {
        "scenario": opts.scenario,
        "passed": all(c["ok"] for c in checks),
        "checks": checks,
        "errors": errors,
    }


def install(rows: tuple[str, ...]) -> None:
    @events.quitting.add_listener
    def _verdict(environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, WorkerRunner):
            return
        verdict = evaluate(environment, rows)
        for check in verdict["checks"]:
            value = check["value"]
            shown = "none" if value is None else f"{value:.4g}"
            log.info(
                "criterion %s %s: %s", "ok  " if check["ok"] else "MISS", check["criterion"], shown
            )
        results = options.get(environment).results
        if results:
            Path(results).mkdir(parents=True, exist_ok=True)
            out = Path(results) / "criteria.json"
            out.write_text(json.dumps(verdict, indent=2, ensure_ascii=False) + "\n")
        environment.process_exit_code = 0 if verdict["passed"] else 1
