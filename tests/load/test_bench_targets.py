"""The benchmark's target variants: what `make bench` compares each fast path against."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))

from bench.targets import TargetSpec, parse_targets


def test_variants_set_the_replicas_settings():
    stock, two_off = parse_targets("redis-1+stock, redis-3+no-write_now+no-direct_writer")
    assert stock == TargetSpec("project", 1, "redis", ("stock",))
    assert stock.env == {"CHAT_FAST_PATHS_OFF": "all"} and stock.label == "redis-1+stock"
    assert two_off.env == {"CHAT_FAST_PATHS_OFF": "write_now,direct_writer"}
    assert "(no-write_now, no-direct_writer)" in two_off.title
    assert parse_targets("redis-1")[0].env == {}


@pytest.mark.parametrize("bad", ["redis-1+uvloop", "ceiling+stock", "tutorial-1+stock", "x-1"])
def test_unknown_targets_and_variants_are_refused(bad):
    with pytest.raises(ValueError, match="unknown"):
        parse_targets(bad)


def test_a_fast_path_the_app_does_not_know_stops_the_replica_at_start():
    """`+no-typo` reaches the settings, which refuse it by name (realtime/fast_paths.py)."""
    from realtime.fast_paths import parse_off

    with pytest.raises(ValueError, match="no_such_path, which is not a fast path"):
        parse_off(["no_such_path"])
    assert parse_off(["all"]) == parse_off(
        [
            "direct_writer",
            "write_now",
            "server_send",
            "group_send_script",
            "receive_batch",
            "quiet_autobahn",
        ]
    )
