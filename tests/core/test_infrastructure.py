"""Test infrastructure stays out of the runtime tree, and the tests still get their servers.

app/ is what the image ships (Dockerfile: COPY app/): nothing in it may import the
throwaway servers or the stack launcher (tools/localstack/), and importing the test
settings must start nothing. The servers come from the pytest plugin
tests/plugins/services.py instead, checked here in a pytest process of its own.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

from localstack.servers import port_open

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "app"
TEST_ONLY = {"localstack", "tests", "pytest", "pytest_django"}
# What the test services export; a child must not inherit this process's own.
SERVICE_KEYS = ("DATABASE_URL", "REDIS_URL", "CHAT_TEST_REDIS_PORT", "CHAT_TEST_SERVICES_ROOT")


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports, at any depth of its code."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SERVICE_KEYS}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return {**env, **extra}


def test_app_has_no_test_infrastructure():
    assert not (APP / "localstack").exists()
    offenders = {
        str(path.relative_to(ROOT)): sorted(found)
        for path in APP.rglob("*.py")
        if (found := imported_modules(path) & TEST_ONLY)
    }
    assert offenders == {}


def test_build_context_leaves_tools_and_tests_out():
    """The images are built from a whitelisted context (.dockerignore): app/, not these."""
    rules = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert "*" in rules
    assert not {"!tools", "!tests"} & rules


# Imports the test settings, then reports the children this process has (a started
# PostgreSQL or Redis would be one) and whether the launcher's code was loaded.
IMPORT_SETTINGS = """
import json, os, sys
from pathlib import Path
try:
    import config.settings.test as settings
    outcome = {"database_port": settings.DATABASES["default"]["PORT"]}
except Exception as exc:
    outcome = {"error": f"{type(exc).__name__}: {exc}"}
children = []
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        continue
    if int(fields[1]) == os.getpid():
        children.append(stat.parent.name)
outcome.update(children=children, localstack="localstack" in sys.modules)
print(json.dumps(outcome))
"""


def import_test_settings(**env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_SETTINGS],
        cwd=APP,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_importing_test_settings_starts_nothing():
    outcome = import_test_settings(
        DATABASE_URL="postgres://nobody@127.0.0.1:9/none", REDIS_URL="redis://127.0.0.1:9/0"
    )
    assert outcome == {"database_port": 9, "children": [], "localstack": False}


def test_test_settings_without_a_database_say_so():
    outcome = import_test_settings()
    assert outcome["error"].startswith("ImproperlyConfigured: DATABASE_URL is not set")
    assert outcome["children"] == [] and outcome["localstack"] is False


# Run by a pytest of its own, configured by pyproject.toml as every suite is: what the
# settings saw, and what a process a test starts would inherit.
INNER_TEST = """
import json, os
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection


def test_services(pytestconfig, django_db_blocker):
    db = settings.DATABASES["default"]
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        answered = cursor.fetchone() == (1,)
    Path(os.environ["PROBE_OUT"]).write_text(json.dumps({
        "plugin": pytestconfig.pluginmanager.has_plugin("tests.plugins.services"),
        "answered": answered and redis.Redis.from_url(settings.REDIS_URL).ping(),
        "database_url": os.environ["DATABASE_URL"],
        "settings_database": f"{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "redis_url": os.environ.get("REDIS_URL"),
        "settings_redis": settings.REDIS_URL,
        "root": os.environ.get("CHAT_TEST_SERVICES_ROOT"),
    }))
"""


def run_inner_pytest(tmp_path: Path, **env: str) -> dict:
    test = tmp_path / "test_inner.py"
    test.write_text(INNER_TEST)
    out = tmp_path / "probe.json"
    config = ["-c", str(ROOT / "pyproject.toml"), "--rootdir", str(ROOT)]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(test), "-q", "-p", "no:cacheprovider", *config],
        cwd=ROOT,
        env=clean_env(PROBE_OUT=str(out), **env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_plugin_starts_the_servers_before_the_settings_and_stops_them(tmp_path):
    seen = run_inner_pytest(tmp_path)
    assert seen["plugin"] and seen["root"]
    # The settings were loaded after the plugin had exported the URLs of its servers.
    assert seen["database_url"].endswith(seen["settings_database"])
    assert seen["redis_url"] == seen["settings_redis"]
    assert seen["answered"]
    # Stopped and removed when that pytest exited.
    assert not Path(seen["root"]).exists()
    assert not port_open(port_of(seen["database_url"]))
    assert not port_open(port_of(seen["redis_url"]))


def test_plugin_uses_a_given_database(tmp_path):
    given = {key: os.environ[key] for key in ("DATABASE_URL", "REDIS_URL")}
    seen = run_inner_pytest(tmp_path, **given)
    assert seen["root"] is None and seen["answered"]
    assert (seen["database_url"], seen["redis_url"]) == (given["DATABASE_URL"], given["REDIS_URL"])
