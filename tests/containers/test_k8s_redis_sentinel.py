"""The in-cluster Sentinel component (k8s/components/redis-sentinel), through the overlay
that uses it (k8s/overlays/dev-sentinel), without a cluster: the app switches from
REDIS_URL to the sentinels, the Redis pods are restricted and never evict, and the
NetworkPolicies let the app reach 26379 and the Redis pods reach each other.

Rendering, the schemas and checkov run on it with every other overlay (test_static.py);
what only a cluster shows is in docs/deploy.md, "Cluster-only assumptions".
"""

from __future__ import annotations

import re
import subprocess

import pytest

from .harness import REPO
from .test_static import _allowed, _by_kind, _config, _containers, _labels, _named_ports

OVERLAY = "k8s/overlays/dev-sentinel"
COMPONENT = REPO / "k8s" / "components" / "redis-sentinel"
NAMESPACE = "chatstack-dev"
CLIENTS = ("web", "ws", "migrate")


@pytest.fixture(scope="module")
def docs(tools, yaml_docs) -> list[dict]:
    proc = subprocess.run(
        [tools["kubectl"], "kustomize", OVERLAY], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return yaml_docs(proc.stdout)


@pytest.fixture(scope="module")
def redis_set(docs) -> dict:
    return _by_kind(docs, "StatefulSet")["redis-sentinel"]


def test_it_is_a_component_on_top_of_dev(yaml_docs):
    (component,) = yaml_docs((COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    (overlay,) = yaml_docs((REPO / OVERLAY / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../dev"]
    assert overlay["components"] == ["../../components/redis-sentinel"]
    assert overlay["namespace"] == NAMESPACE


def test_the_app_finds_redis_through_the_sentinels(docs, redis_set):
    # dev's one Redis (and its ClusterIP Service, which would mix master and replicas) goes.
    assert set(_by_kind(docs, "StatefulSet")) == {"postgres", "redis-sentinel"}
    assert "redis" not in _by_kind(docs, "Service")
    # REDIS_URL and REDIS_SENTINELS together are a settings error: the URL is gone.
    secret = _by_kind(docs, "Secret")["chat-secrets"]["stringData"]
    assert "REDIS_URL" not in secret and "DATABASE_URL" in secret
    name, config = _config(docs)
    assert "REDIS_URL" not in config
    # One sentinel per pod, each by the stable name the headless Service gives it.
    replicas = redis_set["spec"]["replicas"]
    service = redis_set["spec"]["serviceName"]
    expected = [f"redis-sentinel-{i}.{service}:26379" for i in range(replicas)]
    assert config["REDIS_SENTINELS"].split(",") == expected
    headless = _by_kind(docs, "Service")[service]["spec"]
    assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is True
    assert (
        headless["selector"].items() <= redis_set["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {(p["port"], p["targetPort"]) for p in headless["ports"]} == {
        (6379, "redis"),
        (26379, "sentinel"),
    }
    # The master's name is stated once (chat-config) and copied into both containers.
    for c in redis_set["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["REDIS_SENTINEL_MASTER"] == config["REDIS_SENTINEL_MASTER"] != "", c["name"]
        assert int(env["REDIS_SENTINEL_DOWN_AFTER_MS"]) == 5000
    # Every app container reads the merged chat-config and the Secret.
    for d in docs:
        if d["kind"] in ("Deployment", "Job") and d["metadata"]["name"] in {"web", "ws", "migrate"}:
            for c in _containers(d["spec"]["template"]["spec"]):
                refs = {next(iter(e.values()))["name"] for e in c["envFrom"]}
                assert refs == {name, "chat-secrets"}, (d["metadata"]["name"], c["name"])


def test_redis_pods_are_restricted_probed_and_never_evict(docs, redis_set):
    spec = redis_set["spec"]
    assert spec["replicas"] == 3  # a master, two replicas, three sentinels: quorum 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"redis", "sentinel"}
    for c in containers.values():
        assert c["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(c["resources"]["requests"])
        assert {"cpu", "memory"} <= set(c["resources"]["limits"])
        for probe in ("livenessProbe", "readinessProbe"):
            assert c[probe]["exec"]["command"][0] == "redis-cli", (c["name"], probe)
        # Sentinel rewrites its config, Redis may write: a writable emptyDir for each.
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/scripts"]["readOnly"] is True and "/data" in mounts
    assert containers["sentinel"]["readinessProbe"]["exec"]["command"][-2:] == ["26379", "ping"]
    # A master hands over before it stops (preStop, within the grace period), and a server
    # that waits for a failover at start is not killed by its liveness probe meanwhile.
    redis = containers["redis"]
    assert redis["lifecycle"]["preStop"]["exec"]["command"] == [
        "sh", "/scripts/start.sh", "prestop",
    ]  # fmt: skip
    assert pod["terminationGracePeriodSeconds"] >= 20 + 10
    startup = redis["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] > 60
    # noeviction (every channels_redis key has a TTL: volatile-* policies would evict
    # group memberships), under a maxmemory below the container's limit.
    maps = _by_kind(docs, "ConfigMap")
    (scripts,) = [cm for n, cm in maps.items() if n.startswith("redis-sentinel-scripts")]
    script = scripts["data"]["start.sh"]
    assert "--maxmemory-policy noeviction" in script
    assert re.search(r"sentinel monitor \$master_name \$master 6379 2\n", script)
    assert "sentinel announce-hostnames yes" in script and "--replica-announce-ip" in script
    env = {e["name"]: e["value"] for e in containers["redis"]["env"]}
    maxmemory = int(env["REDIS_MAXMEMORY"].removesuffix("mb")) * 2**20
    assert containers["redis"]["resources"]["limits"]["memory"] == "512Mi"
    assert maxmemory <= 0.8 * 512 * 2**20
    # Voluntary disruptions keep two of the three sentinels.
    pdb = _by_kind(docs, "PodDisruptionBudget")["redis-sentinel"]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys


def test_start_script_is_plain_sh():
    proc = subprocess.run(["sh", "-n", str(COMPONENT / "start.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_network_policies_let_the_app_reach_the_sentinels(docs):
    policies = list(_by_kind(docs, "NetworkPolicy").values())
    pods, ports = _labels(docs), _named_ports(docs)

    def reach(src: str, dst: str, port: int) -> bool:
        there = {"namespace": NAMESPACE, "labels": pods[dst]}
        here = {"namespace": NAMESPACE, "labels": pods[src]}
        return _allowed(
            policies, NAMESPACE, "Egress", pods[src], there, port, names=ports[dst]
        ) and _allowed(policies, NAMESPACE, "Ingress", pods[dst], here, port, names=ports[dst])

    redis = "redis-sentinel"
    for client in CLIENTS:
        assert reach(client, redis, 26379) and reach(client, redis, 6379), client
        assert not reach(client, redis, 16379), client
        assert reach(client, "postgres", 5432), client
    # Replication, sentinels watching the servers and each other, start.sh asking peers.
    assert reach(redis, redis, 6379) and reach(redis, redis, 26379)
    assert not reach(redis, "postgres", 5432) and not reach(redis, "ws", 8000)
    assert not reach("nginx", redis, 26379) and not reach("nginx", redis, 6379)
    outside = {"ip": "203.0.113.7"}
    assert not _allowed(policies, NAMESPACE, "Egress", pods[redis], outside, 6379)
    assert not _allowed(policies, NAMESPACE, "Ingress", pods[redis], outside, 26379)
