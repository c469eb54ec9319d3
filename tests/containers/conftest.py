"""Fixtures of the container tests: the tools, the images (built once, cached) and timings.

Run by `make test-containers`, which installs the tools into build/containers/ first;
never part of `make test`. Needs a Docker engine, docker-compose and (as root) debootstrap.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from . import harness

TIMINGS: dict[str, float] = {}


ORDER = (
    "test_static.py",
    "test_monitoring.py",
    "test_k8s_redis_sentinel.py",
    "test_nginx_render.py",
    "test_compose_config.py",
    "test_compose_sentinel.py",
    "test_k8s_sentinel_script.py",
    "test_images.py",
    "test_compose_stack.py",
    "test_compose_sentinel_stack.py",
)


def pytest_collection_modifyitems(items):
    """Cheap checks first, then the images, then the running stack."""

    here = harness.REPO / "tests" / "containers"

    def rank(item) -> int:
        if item.path.parent != here:
            return -1  # another suite's test: keep its place
        name = item.path.name
        return ORDER.index(name) if name in ORDER else len(ORDER)

    items.sort(key=rank)


def pytest_terminal_summary(terminalreporter):
    if TIMINGS:
        terminalreporter.section("container test timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{seconds:7.1f} s  {what}")


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    paths = {
        "hadolint": harness.TOOLS / "hadolint",
        "kubectl": harness.TOOLS / "kubectl",
        "kubernetes-validate": harness.TOOLS / "kubernetes-validate",
        "compose-v2": harness.TOOLS / "docker-compose",
        "python": harness.TOOLS / "python",
        "checkov": harness.CHECKOV,
    }
    missing = [name for name, path in paths.items() if not path.exists()]
    assert not missing, f"missing tools {missing}: run `make test-containers`"
    found = {name: str(path) for name, path in paths.items()}
    found["compose-v1"] = shutil.which("docker-compose") or ""
    assert found["compose-v1"], "docker-compose (1.29, Debian's package) is not installed"
    return found


@pytest.fixture(scope="session")
def yaml_docs(tools):
    """YAML text -> list of documents (PyYAML lives in the tools venv, not in .venv)."""

    def load(text: str) -> list:
        out = subprocess.run(
            [
                tools["python"],
                "-c",
                "import json, sys, yaml; "
                "print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
            ],
            input=text,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out)

    return load


@pytest.fixture(scope="session")
def docker_engine() -> str:
    version = harness.run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout
    return version.strip()


@pytest.fixture(scope="session")
def base_images(docker_engine) -> None:
    """The debootstrapped base, the wheelhouse and the nginx base (all cached)."""
    harness.build_base_images(TIMINGS)


@pytest.fixture(scope="session")
def built_images(base_images, tools, tmp_path_factory) -> dict[str, str]:
    """Every image of the compose file, built by docker-compose 1.29 as a user would."""
    compose = harness.Compose(
        tool=[tools["compose-v1"]],
        project=f"{harness.PROJECT_PREFIX}-build",
        workdir=tmp_path_factory.mktemp("compose-build"),
    )
    started = time.monotonic()
    # --force-rm: a failed step leaves no intermediate container behind.
    compose("--profile", "loadtest", "build", "--force-rm", timeout=2400)
    TIMINGS["compose build (app, nginx, locust, postgres, redis)"] = time.monotonic() - started
    for name, ref in harness.IMAGES.items():
        assert harness.image_id(ref), f"{name} image {ref} was not built"
    return dict(harness.IMAGES)
