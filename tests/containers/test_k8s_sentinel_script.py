"""k8s/components/redis-sentinel/start.sh, run for real without a cluster: three "pods"
as Docker containers on one network, each a Redis container and a sentinel container
sharing its network namespace (as a pod's containers do), reachable by the names the
headless Service would give them (`redis-sentinel-<i>.redis-sentinel`), non-root on
read-only roots with an empty /data, as in the StatefulSet.

They start together (podManagementPolicy: Parallel) and settle on pod 0 as the master.
The master's pod deleted at once and recreated (a crash, a new address): its server waits
until the sentinels have promoted another pod, by name, then replicates it. The new
master's pod deleted as Kubernetes does it (preStop first): it hands over before it stops,
without the down-after wait, and comes back as a replica.

A deleted pod's name stops resolving. Sentinel resolves names on its event loop, and a
look-up of 2 s or more puts it in TILT mode (it stops acting for 30 s, again at every
slow look-up), so it never fails over. CoreDNS answers at once for a cluster name
(docs/deploy.md, "Cluster-only assumptions", says how to check); so does Docker's DNS on a
network that is not internal (on an internal one, it takes 20 s), hence this network.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from . import harness

SCRIPT = harness.REPO / "k8s" / "components" / "redis-sentinel" / "start.sh"
NETWORK = f"{harness.PROJECT_PREFIX}-k8s-sentinel"
MASTER = "chatstack"
DOWN_AFTER_S = 5


def name(i: int, container: str) -> str:
    return f"{NETWORK}-{i}-{container}"


def fqdn(i: int) -> str:
    return f"redis-sentinel-{i}.redis-sentinel"


def start_pod(i: int) -> None:
    common = [
        "--detach",
        "--user", "999:999",
        "--read-only",
        "--tmpfs", "/data:uid=999,gid=999,mode=0700",
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true",
        "--env", f"HOSTNAME=redis-sentinel-{i}",
        "--env", f"REDIS_SENTINEL_MASTER={MASTER}",
        "--env", f"REDIS_SENTINEL_DOWN_AFTER_MS={DOWN_AFTER_S * 1000}",
        "--env", "REDIS_MAXMEMORY=64mb",
        "--volume", f"{SCRIPT}:/scripts/start.sh:ro",
    ]  # fmt: skip
    harness.run(
        ["docker", "run", "--name", name(i, "redis"), "--network", NETWORK,
         "--network-alias", fqdn(i), *common, harness.IMAGES["redis"],
         "sh", "/scripts/start.sh", "redis"]
    )  # fmt: skip
    harness.run(
        ["docker", "run", "--name", name(i, "sentinel"),
         "--network", f"container:{name(i, 'redis')}", *common, harness.IMAGES["redis"],
         "sh", "/scripts/start.sh", "sentinel"]
    )  # fmt: skip


def delete_pod(i: int) -> None:
    for container in ("sentinel", "redis"):
        harness.run(["docker", "rm", "--force", name(i, container)], check=False, quiet=True)


def cli(i: int, *args: str, sentinel: bool = False) -> list[str]:
    container = name(i, "sentinel" if sentinel else "redis")
    port = "26379" if sentinel else "6379"
    cmd = ["docker", "exec", container, "redis-cli", "-p", port, "--raw", *args]
    return harness.run(cmd, quiet=True).stdout.split()


def masters(pods) -> set[str]:
    return {
        ":".join(cli(i, "sentinel", "get-master-addr-by-name", MASTER, sentinel=True)) for i in pods
    }


def sentinel_view(i: int) -> dict[str, str]:
    info = cli(i, "sentinel", "master", MASTER, sentinel=True)
    return dict(zip(info[::2], info[1::2], strict=False))


def settled(master: int, pods=(0, 1, 2)) -> bool:
    view = sentinel_view(pods[0])
    return (
        masters(pods) == {f"{fqdn(master)}:6379"}
        and view.get("num-slaves") == "2"
        and view.get("num-other-sentinels") == "2"
        and all(cli(i, "role")[0] == ("master" if i == master else "slave") for i in pods)
    )


@pytest.fixture(scope="module")
def pods(tools, tmp_path_factory):
    harness.redis_image(
        tools["compose-v1"],
        f"{harness.PROJECT_PREFIX}-k8s-sentinel-build",
        tmp_path_factory.mktemp("k8s-sentinel"),
    )
    for i in range(3):
        delete_pod(i)
    harness.run(["docker", "network", "rm", NETWORK], check=False, quiet=True)
    harness.run(["docker", "network", "create", NETWORK])
    try:
        for i in range(3):
            start_pod(i)
        yield
    finally:
        for i in range(3):
            with contextlib.suppress(Exception):
                logs = harness.run(["docker", "logs", "--tail", "5", name(i, "sentinel")])
                harness.log(f"pod {i} sentinel: {logs.stdout[-600:]}{logs.stderr[-600:]}")
            delete_pod(i)
        harness.run(["docker", "network", "rm", NETWORK], check=False)


def test_start_script_bootstraps_fails_over_and_rejoins(pods):
    harness.wait_for(lambda: settled(0), timeout=90, what="pod 0 master, 2 replicas, 3 sentinels")
    # Addresses are names, never container (pod) addresses.
    replicas = {
        line.split("ip=", 1)[1].split(",", 1)[0]
        for line in cli(0, "info", "replication")
        if line.startswith("slave") and "ip=" in line
    }
    assert replicas == {fqdn(1), fqdn(2)}
    # A crash: the pod is gone and back at once, empty, before the sentinels noticed.
    delete_pod(0)
    started = time.monotonic()
    start_pod(0)
    harness.wait_for(
        lambda: any(cli(i, "role")[0] == "master" for i in (1, 2)),
        timeout=DOWN_AFTER_S + 15,
        interval=0.5,
        what="another pod promoted",
    )
    harness.log(f"k8s start.sh, crash: promoted in {time.monotonic() - started:.1f} s")
    (new,) = [i for i in (1, 2) if cli(i, "role")[0] == "master"]
    harness.wait_for(lambda: settled(new), timeout=120, what=f"pod 0 a replica of pod {new}")
    # A delete: preStop hands the master over, then the pod goes and comes back.
    started = time.monotonic()
    harness.run(["docker", "exec", name(new, "redis"), "sh", "/scripts/start.sh", "prestop"])
    handed = time.monotonic() - started
    assert cli(new, "role")[0] == "slave"
    (other,) = [i for i in (0, 1, 2) if i != new and cli(i, "role")[0] == "master"]
    harness.log(f"k8s start.sh, preStop: pod {other} master after {handed:.1f} s")
    assert handed < DOWN_AFTER_S
    delete_pod(new)
    start_pod(new)
    harness.wait_for(lambda: settled(other), timeout=120, what=f"all following pod {other}")
