"""Collected static files as production serves them: one consistent release per page.

A page names its entry module by its hashed name; the modules it imports must be hashed
too, or a page of one release would load another release's modules after a deploy.
collectstatic runs as the Dockerfile runs it: entrypoint.py, production settings.
"""

from __future__ import annotations

import json
import posixpath
import re
import subprocess
import sys
from pathlib import Path

from .test_processes import ENTRYPOINT, base_env

# `… from "x"` and `import "x"`: the static imports and re-exports a module can have.
IMPORT = re.compile(r"""\bfrom\s*["']([^"']+)["']|\bimport\s*["']([^"']+)["']""")
ENTRIES = ("chat/room.js", "chat/index.js")
HASHED = re.compile(r"\.[0-9a-f]{12}\.js$")


def collect(tmp: Path) -> tuple[Path, dict[str, str]]:
    """collectstatic as the Dockerfile runs it; the collected root and the manifest."""
    # DEBUG=1 only so that settings load without the production secrets (as the Dockerfile).
    env = base_env(DEBUG="1", CHAT_DATA_DIR=str(tmp / "data"), STATIC_ROOT=str(tmp / "static"))
    subprocess.run(
        [sys.executable, ENTRYPOINT, "collectstatic", "--verbosity", "0"], env=env, check=True
    )
    manifest = json.loads((tmp / "static" / "staticfiles.json").read_text())
    return tmp / "static", manifest["paths"]


def imports(path: Path) -> list[str]:
    return [m[1] or m[2] for m in IMPORT.finditer(path.read_text(encoding="utf-8"))]


def test_module_imports_point_at_hashed_files_of_the_same_release(tmp_path):
    root, paths = collect(tmp_path)
    hashed_names = set(paths.values())
    reached = set()
    todo = [paths[entry] for entry in ENTRIES]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        for url in imports(root / name):
            assert url.startswith(("./", "../")), (name, url)
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), url))
            assert HASHED.search(target) and target in hashed_names, (name, url)
            assert (root / target).is_file(), (name, url)
            todo.append(target)
    originals = {original for original, hashed in paths.items() if hashed in reached}
    # Every collected module is reached from a page's entry, under its hashed name.
    modules = {name for name in paths if name.startswith("chat/") and name.endswith(".js")}
    assert {"chat/room/socket.js", "chat/room/log.js", "chat/dom.js"} <= modules
    assert originals == modules
