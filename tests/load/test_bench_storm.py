"""`BENCH_STORM=1 make bench` at a tiny size: every figure is there and the run is whole.

60 clients over 2 client processes against the ceiling and the project (3 replicas),
short fan-outs (the ceiling's and the project's from a WebSocket sender, the project's from
its HTTP API), and a rolling restart with short drains (CHAT_DRAIN_TIMEOUT reaches the
replicas through the environment). Figures are not judged here (the machine is shared
with other suites), except what must hold at any size: everyone joins, every message
reaches everyone, every moved client resumes and nothing is lost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 60
ENV = {
    "BENCH_STORM": "1",
    "BENCH_TARGETS": "ceiling,redis-3",
    "BENCH_STORM_CLIENTS": str(CLIENTS),
    "BENCH_STORM_PROCS": "2",
    "BENCH_STORM_INFLIGHT": "40",
    "BENCH_STORM_FANOUT_SECONDS": "3",
    "BENCH_STORM_JOIN_LIMIT": "60",
    "CHAT_DRAIN_TIMEOUT": "4",
    "CHAT_DRAIN_SPREAD": "1",
}


@pytest.fixture(scope="module")
def storm(tmp_path_factory) -> tuple[dict, str, str]:
    out = tmp_path_factory.mktemp("storm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")} | ENV
    done = subprocess.run(
        [sys.executable, str(ROOT / "loadtests" / "bench" / "run.py"), "--out", str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    log = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, log
    report = (out / "report.md").read_text()
    assert report.count("### Targets") == 1, log
    return json.loads((out / "results.json").read_text()), log, report


def target(results: dict, kind: str) -> dict:
    found = [t for t in results["targets"] if t.get("kind") == kind]
    assert len(found) == 1 and "error" not in found[0], results["targets"]
    return found[0]


def test_the_join_storm_is_measured_on_both(storm):
    results, log, _ = storm
    assert results["mode"] == "storm"
    for kind in ("ceiling", "project"):
        s = target(results, kind)["storm"]
        assert s["joined"] == CLIENTS and s["all_joined"], (kind, s, log)
        for key in ("all_joined_s", "join_p50_ms", "join_p99_ms", "joined_at_p99_s"):
            assert s[key] is not None and s[key] >= 0, (kind, key, s)
        assert s["presence_per_member_max"] >= s["presence_per_member_mean"] >= 0
        assert isinstance(s["failed_handshakes"], dict)
        assert len(s["client_cpu"]) == 2
        assert all(m["connections"] > 0 for m in s["memory"].values()), s["memory"]
        assert sum(m["connections"] for m in s["memory"].values()) == CLIENTS, s["memory"]
    project = target(results, "project")["storm"]
    assert sorted(project["memory"]) == ["ws-1", "ws-2", "ws-3"]
    assert project["services"]["redis_cmds_per_s"]["peak"] > 0, project["services"]


def check_fanout(f: dict, sender: str, log: str) -> None:
    assert f["sender"] == sender, f
    assert f["members"] == CLIENTS and f["sent"] >= 2, (f, log)
    assert f["delivery_ratio"] == 1.0 and f["post_failures"] == {}, (f, log)
    assert len(f["ids"]) == f["sent"] and f["delivered"] == f["sent"] * CLIENTS, f
    assert f["p50_ms"] is not None and f["max_ms"] >= f["p99_ms"] >= f["p50_ms"] >= 0, f
    assert len(f["message_mean_ms"]) == f["sent"] and None not in f["message_mean_ms"], f
    assert f["cpu"] and all(v >= 0 for v in f["cpu"].values()), f["cpu"]
    assert len(f["client_cpu"]) == 2, f


def test_fanout_reaches_every_member(storm):
    results, log, _ = storm
    check_fanout(target(results, "project")["fanout"], "http", log)


def test_the_ceiling_and_a_websocket_sender_have_the_same_fanout(storm):
    results, log, _ = storm
    ceiling = target(results, "ceiling")["fanout"]
    check_fanout(ceiling, "ws", log)
    assert ceiling["unechoed"] == 0 and sorted(ceiling["cpu"]) == ["ceiling", "nginx"], ceiling
    assert "restart" not in target(results, "ceiling")
    project = target(results, "project")
    check_fanout(project["fanout_ws"], "ws", log)
    assert project["fanout_ws"]["sent"] == project["fanout"]["sent"], project["fanout_ws"]
    # Each fan-out's messages are its own: the WebSocket ones are not the HTTP API's.
    assert not set(project["fanout_ws"]["ids"]) & set(project["fanout"]["ids"])


def test_the_report_puts_the_ceiling_next_to_the_fanout_target(storm):
    _, _, text = storm
    table = text.split("### Fan-out\n", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    assert len(table) == 2 + 3, table  # header, rule; ceiling, project ×2
    target_line = next(line for line in text.splitlines() if "fan-out to" in line)
    assert "≤ 250 ms" in target_line and "the ceiling's" in target_line, target_line


def test_a_rolling_restart_moves_everyone_and_loses_nothing(storm):
    results, log, _ = storm
    r = target(results, "project")["restart"]
    assert [x["name"] for x in r["replicas"]] == ["ws-1", "ws-2", "ws-3"]
    assert all(x["exit_code"] == 0 for x in r["replicas"]), r["replicas"]
    # Every socket was on some replica, and each replica's clients came back.
    assert sum(x["moved"] for x in r["replicas"]) >= CLIENTS, r["replicas"]
    for x in r["replicas"]:
        assert x["unresumed"] == 0, (x, log)
        assert x["moved"] == 0 or x["all_resumed_s"] is not None, x
    assert r["reconnects_per_client_mean"] >= 1 and r["reconnects_per_client_max"] >= 1, r
    fanout = target(results, "project")["fanout"]
    assert r["sent"] > 0 and r["checked_ids"] == fanout["sent"] + r["sent"], r
    assert r["lost"] == 0 and r["not_open_at_end"] == 0, (r["missed_ids"], log)
    assert r["services"]["pg_writes_per_s"]["peak"] > 0, r["services"]
