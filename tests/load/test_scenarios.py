"""Every Locust scenario, headless and short, against a real stack (nginx + 2 replicas).

The stack comes from the Stack API (tools/localstack/stack.py) on free ports. The five
scenarios run side by side for LOAD_SECONDS with a few users each, so the suite stays
under a minute of load; a sixth fanout run ignores some deliveries on purpose and must
fail, proving that the checks notice. Latency is not judged here (the machine is shared
with other suites): --max-p99 is lifted, the delivery ratio must be exactly 100 %.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from loadtests.run import run_locust
from localstack.servers import free_ports
from localstack.stack import Stack

pytestmark = pytest.mark.stack

LOAD_SECONDS = 30
RUNS = {
    # name: (scenario, users, extra environment)
    "fanout": ("fanout", 16, {}),
    "rooms": ("rooms", 12, {"LOCUST_USER_RATE": "0.5"}),
    "pm": ("pm", 8, {"LOCUST_USER_RATE": "0.5"}),
    "mixed": ("mixed", 12, {"LOCUST_USER_RATE": "0.5"}),
    "churn": ("churn", 10, {"LOCUST_USER_RATE": "0.5", "LOCUST_LIFETIME": "3-6"}),
    "selftest": ("fanout", 8, {"LOCUST_SELFTEST_DROP": "0.05", "LOCUST_ROOM": "lt-selftest"}),
}
COMMON = {
    "LOCUST_SETTLE": "2",
    "LOCUST_DRAIN": "3",
    "LOCUST_RECONCILE_TIME": "7",
    "LOCUST_MAX_P99": "60000",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[int, Path]]:
    root = tmp_path_factory.mktemp("load")
    base = free_ports(4)
    with Stack(replicas=2, port=base, base_port=base + 1) as stack:
        procs: dict[str, tuple[subprocess.Popen, Path]] = {}
        offset = 1
        for name, (scenario, users, env) in RUNS.items():
            tokens = root / f"{name}.tokens"
            stack.manage(
                "create_users",
                *("--count", str(users), "--prefix", f"lt{name}", "--start", str(offset)),
                *("--tokens-out", str(tokens)),
            )
            offset += users
            results = root / name
            proc = run_locust(
                scenario,
                users=users,
                duration=f"{LOAD_SECONDS}s",
                host=stack.url,
                tokens=tokens,
                results=results,
                ws_hosts=",".join(r.url for r in stack.replicas),
                spawn_rate=users,
                env={**COMMON, **env},
                wait=False,
            )
            procs[name] = (proc, results)
        done = {}
        for name, (proc, results) in procs.items():
            done[name] = (proc.wait(timeout=LOAD_SECONDS + 90), results)
    return done


def delivery_rows(results: Path) -> dict[str, dict[str, str]]:
    with (results / "stats_stats.csv").open() as f:
        return {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "DELIVER"}


@pytest.mark.parametrize("name", [n for n in RUNS if n != "selftest"])
def test_scenario_delivers_everything_and_writes_reports(runs, name):
    code, results = runs[name]
    verdict = json.loads((results / "criteria.json").read_text())
    log = (results / "locust.log").read_text()[-3000:]
    assert code == 0, f"{name}: exit {code}\n{json.dumps(verdict, indent=1)}\n{log}"
    ratios = [c for c in verdict["checks"] if "delivery ratio" in c["criterion"]]
    assert ratios and all(c["value"] == 1.0 and c["expected"] > 0 for c in ratios), verdict
    assert (results / "report.html").stat().st_size > 10_000
    rows = delivery_rows(results)
    assert rows and all(int(r["Request Count"]) > 0 for r in rows.values()), rows
    assert all(int(r["Failure Count"]) == 0 for r in rows.values()), rows


def test_missed_deliveries_fail_the_run(runs):
    code, results = runs["selftest"]
    verdict = json.loads((results / "criteria.json").read_text())
    assert code == 1, verdict
    fanout = next(c for c in verdict["checks"] if c["criterion"].startswith("fanout delivery"))
    assert fanout["missed_or_late"] > 0 and fanout["value"] < 1.0, verdict
    assert any("MissedDelivery" in error for error in verdict["errors"]), verdict
