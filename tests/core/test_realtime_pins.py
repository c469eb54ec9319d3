"""realtime/ is the one home of code that leans on library internals; an upgrade that
changes what it leans on fails here, with the module to re-sync, before any suite runs
into it."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

from realtime import pins

ROOT = Path(__file__).resolve().parents[2]
# Modules whose internals realtime/ uses: nothing else in app/ may import them.
FENCED = (
    "daphne.server",
    "daphne.ws_protocol",
    "autobahn",
    "twisted",
    "channels_redis",
)


def test_pinned_libraries_are_the_versions_realtime_tracks():
    assert pins.version_problems() == []


def test_every_upstream_function_realtime_depends_on_is_unchanged():
    problems = pins.source_problems()
    assert problems == [], "\n".join(problems)


def test_a_changed_upstream_function_names_the_module_to_resync(monkeypatch):
    target = "channels_redis.core:RedisChannelLayer.group_send"
    monkeypatch.setitem(pins.SOURCES, target, ("layers.py", "0" * 16))
    gone = "channels_redis.core:RedisChannelLayer.no_such_method"
    monkeypatch.setitem(pins.SOURCES, gone, ("layers.py", "0" * 16))
    problems = pins.source_problems()
    assert any(p.startswith(f"re-sync realtime/layers.py: {target} changed") for p in problems)
    assert any(p.startswith(f"re-sync realtime/layers.py: {gone} is gone") for p in problems)


def test_pyproject_pins_each_library_to_the_tracked_release_line():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dist, line in pins.VERSIONS.items():
        spec = next((d for d in deps if re.match(rf"{re.escape(dist)}\b", d)), None)
        assert spec is not None, f"{dist} is not pinned in pyproject.toml"
        major, minor = line.split(".")
        assert f">={line}" in spec and f"<{major}.{int(minor) + 1}" in spec, spec


def test_only_realtime_imports_the_libraries_it_fences():
    offenders = []
    for path in (ROOT / "app").rglob("*.py"):
        if "realtime" in path.relative_to(ROOT / "app").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if any(name == f or name.startswith(f + ".") for f in FENCED)
            ]
    assert offenders == []
