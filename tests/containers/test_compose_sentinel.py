"""The compose file's `sentinel` profile: a replica and three sentinels beside `redis`.

Statically, with both compose tools: the profile's services, their limits and networks,
and the app switched from REDIS_URL to REDIS_SENTINELS by the four lines of .env that
compose/.env.example gives. Running (the Redis services only, from the test image):
the sentinels agree on the master, promote the replica within down-after + 10 s when the
master is stopped (its name then no longer resolves: on the internal network that takes
20 s, which stalls a Sentinel that watches names, so they watch addresses), make the old
master a replica when it is back, and a restarted promoted server stays the master.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from . import harness
from .harness import REPO

PROFILE = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
SENTINELS = "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
APP = ("migrate", "web", "ws")
DOWN_AFTER_S = 5


def config(tool: str, env: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool, "--env-file", str(env), "-f", "compose/compose.yaml", *args, "config"],
        cwd=REPO,
        capture_output=True,
        text=True,
        # Nothing of a developer's environment (COMPOSE_PROFILES…) leaks in; an empty
        # COMPOSE_PROFILES here would even override the env file's.
        env={"PATH": "/usr/bin:/bin", "HOME": str(env.parent)},
    )


@pytest.fixture
def env_files(tmp_path) -> dict[str, Path]:
    plain = "SECRET_KEY=x\nPOSTGRES_PASSWORD=x\n"
    switched = (
        f"{plain}COMPOSE_PROFILES=sentinel\nREDIS_URL=\n"
        f"REDIS_SENTINELS={SENTINELS}\nREDIS_SENTINEL_MASTER=chatstack\n"
    )
    files = {"plain": plain, "sentinel": switched}
    for name, text in files.items():
        (tmp_path / f"{name}.env").write_text(text)
    return {name: tmp_path / f"{name}.env" for name in files}


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_sentinel_profile_services(tools, yaml_docs, env_files, tool):
    proc = config(tools[tool], env_files["plain"], "--profile", "sentinel")
    assert proc.returncode == 0, proc.stderr
    services = yaml_docs(proc.stdout)[0]["services"]
    assert set(services) >= PROFILE
    redis = services["redis"]
    # Without the profile's variables the app keeps its one Redis.
    for name in APP:
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0", name
        assert env["REDIS_SENTINELS"] in ("", None), name
    assert "noeviction" in redis["command"] and "--maxmemory" in redis["command"]
    for name in PROFILE:
        s = services[name]
        assert s["profiles"] == ["sentinel"], name
        # The same image as `redis`, on the internal network only, no published port.
        assert s["image"] == redis["image"], name
        assert list(s["networks"]) == ["data"] and "ports" not in s, name
        assert s["user"] == "999:999", name
        assert s["logging"]["driver"] == "json-file", name
        assert s["mem_limit"] and 0 < float(s["cpus"]) <= 1 and int(s["pids_limit"]) > 0, name
        assert s["depends_on"]["redis"]["condition"] == "service_healthy", name
    replica = "\n".join(services["redis-replica"]["command"])
    assert "maxmemory-policy noeviction" in replica
    # By address (resolved once, at the first start), never by name: see the docstring.
    assert "getent ahostsv4 redis" in replica and '"replicaof $${master:?' in replica
    hostnames = set()
    for i in (1, 2, 3):
        s = services[f"sentinel-{i}"]
        hostnames.add(s["hostname"])
        script = "\n".join(s["command"])
        assert "--sentinel" in script
        assert "sentinel monitor chatstack $${master:?redis does not resolve} 6379 2" in script
        assert "getent ahostsv4 redis" in script and "resolve-hostnames" not in script
        assert f"sentinel down-after-milliseconds chatstack {DOWN_AFTER_S * 1000}" in script
        assert "26379" in s["healthcheck"]["test"]
    assert hostnames == {"sentinel-1", "sentinel-2", "sentinel-3"}


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_env_file_switches_the_app_to_the_sentinels(tools, yaml_docs, env_files, tool):
    proc = config(tools[tool], env_files["sentinel"])
    assert proc.returncode == 0, proc.stderr
    services = yaml_docs(proc.stdout)[0]["services"]
    for name in APP:
        env = services[name]["environment"]
        # Empty, not the default: the settings refuse REDIS_URL with REDIS_SENTINELS.
        assert env["REDIS_URL"] in ("", None), name
        assert env["REDIS_SENTINELS"] == SENTINELS, name
        assert env["REDIS_SENTINEL_MASTER"] == "chatstack", name
    # Docker Compose v2 filters `config` by profile: COMPOSE_PROFILES from the env file
    # turned the profile on. (1.29 prints every service; it reads COMPOSE_PROFILES from
    # the env file too, in compose/cli/command.py's get_profiles_from_options.)
    if tool == "compose-v2":
        assert set(services) >= PROFILE
        proc = config(tools[tool], env_files["plain"])
        assert not PROFILE & set(yaml_docs(proc.stdout)[0]["services"])


# --- running -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_nodes(tools, tmp_path_factory):
    """The Redis services of the profile, up, from the offline test image."""
    compose = harness.redis_image(
        tools["compose-v1"],
        f"{harness.PROJECT_PREFIX}-sentinel",
        tmp_path_factory.mktemp("compose-sentinel"),
    )
    compose.down()
    try:
        compose("--profile", "sentinel", "up", "-d", "--no-build", *sorted(PROFILE), timeout=300)
        yield compose
    finally:
        compose.down()  # every container, volume and network of the project


def redis_cli(container: str, *args: str, port: int = 6379) -> list[str]:
    proc = harness.run(
        ["docker", "exec", container, "redis-cli", "-p", str(port), "--raw", *args], quiet=True
    )
    return proc.stdout.split()


def master_seen(compose: harness.Compose) -> set[str]:
    """The master address each sentinel names."""
    return {
        ":".join(
            redis_cli(
                compose.container_ids(f"sentinel-{i}")[0],
                "sentinel",
                "get-master-addr-by-name",
                "chatstack",
                port=26379,
            )
        )
        for i in (1, 2, 3)
    }


def role(container: str) -> str:
    return redis_cli(container, "role")[0]


def test_sentinels_fail_over_and_the_old_master_rejoins(redis_nodes):
    compose = redis_nodes
    network = compose.network("data")
    (master,) = compose.container_ids("redis")
    (replica,) = compose.container_ids("redis-replica")
    first = f"{harness.address(master, network)}:6379"
    sentinel = compose.container_ids("sentinel-1")[0]

    def settled() -> bool:
        info = redis_cli(sentinel, "sentinel", "master", "chatstack", port=26379)
        fields = dict(zip(info[::2], info[1::2], strict=False))
        return (
            master_seen(compose) == {first}
            and fields.get("num-slaves") == "1"
            and fields.get("num-other-sentinels") == "2"
            and role(replica) == "slave"
        )

    harness.wait_for(settled, timeout=90, what="3 sentinels agree on redis, 1 replica")
    # The master stops: gone from the network, its name no longer resolves.
    harness.run(["docker", "stop", "--time", "1", master])
    try:
        started = time.monotonic()
        promoted = f"{harness.address(replica, network)}:6379"
        # A client (redis-py's Sentinel) takes the first sentinel that names a master it
        # does not consider down: one sentinel naming the promoted replica is enough. The
        # bound is loose (the sentinels' own election, on a machine that may be busy):
        # the app's bound, posting again within down-after + 10 s, is
        # test_compose_sentinel_stack.py's.
        try:
            harness.wait_for(
                lambda: promoted in master_seen(compose) and role(replica) == "master",
                timeout=DOWN_AFTER_S + 30,
                interval=0.5,
                what="the replica promoted",
            )
        except TimeoutError:
            # Why not: a sentinel in TILT mode (its timer starved on a busy machine)
            # does not fail over for 30 s; its log says +tilt.
            for each in ("sentinel-1", "sentinel-2", "sentinel-3"):
                (container,) = compose.container_ids(each)
                logs = harness.run(["docker", "logs", "--tail", "15", container], check=False)
                harness.log(f"{each}: {logs.stdout[-1500:]}{logs.stderr[-1500:]}")
            raise
        took = time.monotonic() - started
        harness.wait_for(
            lambda: master_seen(compose) == {promoted}, timeout=30, what="every sentinel"
        )
        harness.log(
            f"failover: promoted in {took:.1f} s, every sentinel in "
            f"{time.monotonic() - started:.1f} s (down-after {DOWN_AFTER_S} s)"
        )
    finally:
        harness.run(["docker", "start", master], check=False)
    # Back, the old master is made a replica of the new one.
    harness.wait_for(
        lambda: role(master) == "slave", timeout=60, what="the old master repointed as replica"
    )
    # A restarted promoted server keeps the role Sentinel gave it (its rewritten config).
    harness.run(["docker", "restart", "--time", "5", replica])
    harness.wait_for(lambda: role(replica) == "master", timeout=60, what="the new master back")
    assert master_seen(compose) == {promoted}
    for c in (master, replica):
        assert harness.inspect(c)["Config"]["User"] in ("999:999", "999", "redis")
