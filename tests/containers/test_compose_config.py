"""compose/compose.yaml as each compose tool reads it (no container runs): log rotation and
resource limits on every service, nginx re-resolving the app's service names, and the
rolling-upgrade script's own checks. The running stack shows the same in `docker inspect`
(test_compose_stack.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .harness import REPO

SCRIPT = REPO / "compose" / "rolling-upgrade.sh"
SERVICES = {
    "postgres", "redis", "migrate", "web", "ws", "nginx",
    "locust-tokens", "locust-master", "locust-worker",
    "redis-replica", "sentinel-1", "sentinel-2", "sentinel-3",
}  # fmt: skip


def sh(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("compose-config") / "min.env"
    env.write_text("SECRET_KEY=config-check-only\nPOSTGRES_PASSWORD=config-check-only\n")
    return env


def memory_bytes(value) -> int:
    """1.29 prints mem_limit as written ("448m"), v2 in bytes."""
    text = str(value).lower()
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_every_service_rotates_logs_and_has_limits(tools, yaml_docs, env_file, tool):
    proc = sh(
        tools[tool], "--env-file", str(env_file), "-f", "compose/compose.yaml",
        "--profile", "loadtest", "--profile", "sentinel", "config",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    services = yaml_docs(proc.stdout)[0]["services"]
    assert set(services) == SERVICES
    for name, service in services.items():
        logging = service.get("logging", {})
        assert logging.get("driver") == "json-file", name
        assert logging["options"] == {"max-size": "10m", "max-file": "5"}, name
        # Service-level keys: 1.29 ignores deploy.resources unless run with --compatibility.
        assert "resources" not in service.get("deploy", {}), name
        assert 0 < memory_bytes(service["mem_limit"]) <= 2**30, name
        # Docker refuses a CPU limit above the host's count: one core or less runs anywhere.
        assert 0 < float(service["cpus"]) <= 1, name
        assert 0 < int(service["pids_limit"]) <= 512, name
    assert memory_bytes(services["ws"]["mem_limit"]) == 448 * 2**20
    # daphne holds a file descriptor per WebSocket and does not raise its own limit.
    assert services["ws"]["ulimits"]["nofile"] in (16384, {"soft": 16384, "hard": 16384})
    nginx = services["nginx"]["environment"]
    assert nginx["NGINX_RESOLVER"] == "auto"
    assert (nginx["CHAT_WEB_UPSTREAM"], nginx["CHAT_WS_UPSTREAM"]) == ("web:8000", "ws:8000")
    assert int(nginx["NGINX_CONNECTION_BUDGET"]) > 0


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_limits_follow_the_env_file(tools, yaml_docs, tmp_path, tool):
    env = tmp_path / "big.env"
    env.write_text("SECRET_KEY=x\nPOSTGRES_PASSWORD=x\nWS_MEM_LIMIT=1g\nWEB_CPUS=0.5\n")
    proc = sh(tools[tool], "--env-file", str(env), "-f", "compose/compose.yaml", "config")
    assert proc.returncode == 0, proc.stderr
    services = yaml_docs(proc.stdout)[0]["services"]
    assert memory_bytes(services["ws"]["mem_limit"]) == 2**30
    assert float(services["web"]["cpus"]) == 0.5


def test_rolling_upgrade_script_is_plain_sh():
    assert os.access(SCRIPT, os.X_OK)
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    proc = sh("sh", "-n", str(SCRIPT))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "says"),
    [
        (["--", "ws"], {}, "no compose command before --"),
        (["ws"], {"ROLLING_TIMEOUT": "soon"}, "must be numbers of seconds"),
    ],
)
def test_rolling_upgrade_refuses_bad_input(args, env, says):
    proc = sh("sh", str(SCRIPT), *args, env={"PATH": os.environ["PATH"], **env})
    assert proc.returncode == 1 and says in proc.stderr, proc.stderr


def test_rolling_upgrade_stops_when_migrate_fails(tmp_path):
    """Nothing is replaced unless the new release's migrations ran: a compose command whose
    `run` fails makes the script stop before touching a container."""
    fake = tmp_path / "compose"
    fake.write_text('#!/bin/sh\necho "$@" >>"$LOG"\ncase " $* " in *" run "*) exit 1 ;; esac\n')
    fake.chmod(0o755)
    log = tmp_path / "calls"
    proc = sh(
        "sh", str(SCRIPT), str(fake), "-f", "x.yaml", "--", "migrate", "ws",
        env={"PATH": os.environ["PATH"], "LOG": str(log)},
    )  # fmt: skip
    assert proc.returncode == 1 and "migrate failed: nothing was replaced" in proc.stderr
    assert log.read_text().splitlines() == ["-f x.yaml run --rm -T --no-deps migrate"]
