"""What can be proven without running a container: lint, policy and schema checks.

- hadolint passes on every Dockerfile;
- every kustomization renders (`kubectl kustomize`) and validates against the Kubernetes
  schemas of 1.30 (the oldest supported) and of the newest version kubernetes-validate
  knows, strictly; the CRD objects (the Gateway API HTTPRoute here, the Prometheus
  Operator's PodMonitor and PrometheusRule in test_monitoring.py) are checked by structure;
- the rendered manifests have what ops need (securityContext, probes, drain, HPA, PDB,
  NetworkPolicies…), the overlays' images, settings and budget reach every pod that needs
  them, and checkov finds nothing on them or on the Dockerfiles beyond the exceptions
  justified in tests/containers/checkov.yaml and next to the code;
- the compose file parses with docker-compose 1.29 and Docker Compose v2+ alike, keeps
  the official images for users, and refuses to start without its secrets.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import REPO

DOCKERFILES = [REPO / "Dockerfile", *sorted((REPO / "compose" / "images").rglob("*Dockerfile"))]
KUSTOMIZATIONS = [
    "k8s/base",
    "k8s/overlays/dev",
    "k8s/overlays/prod",
    "k8s/overlays/ingress",
    "k8s/overlays/gateway",
    "k8s/overlays/connection-autoscaling",
    "k8s/overlays/dev-sentinel",
    "k8s/overlays/monitoring",
    "k8s/loadtest",
]
DEPLOYABLE = [
    "k8s/overlays/dev",
    "k8s/overlays/prod",
    "k8s/overlays/ingress",
    "k8s/overlays/gateway",
    "k8s/overlays/connection-autoscaling",
    "k8s/overlays/monitoring",
]
# The oldest Kubernetes the manifests promise (preStop `sleep`, on by default from 1.30;
# autoscaling/v2, policy/v1), and the newest the validator has schemas for.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# API groups of CRDs the validator has no schema for (regex), and the kustomizations that
# use them: the Gateway API's HTTPRoute, the Prometheus Operator's PodMonitor and
# PrometheusRule (checked by structure here and in test_monitoring.py).
CRD_GROUPS = r"(gateway\.networking\.k8s\.io|monitoring\.coreos\.com)"
WITH_CRDS = {"k8s/overlays/gateway", "k8s/overlays/monitoring"}
APP_COMPONENTS = {"web", "ws"}
# Workloads whose containers run without a CPU limit, on purpose (docs/deploy.md, Scaling).
NO_CPU_LIMIT = {"ws"}
ROLES = {"web", "ws", "migrate", "wait-migrations", "collectstatic", "manage"}


def sh(*cmd: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kwargs)


# --- Dockerfiles -----------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_hadolint(tools, dockerfile: Path):
    proc = sh(tools["hadolint"], "--no-color", "--failure-threshold", "info", str(dockerfile))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_installs_locked_dependencies_before_the_source():
    lines = (REPO / "Dockerfile").read_text().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    # The dependency layer depends on the lock alone, so it stays cached across code changes.
    assert first("COPY pyproject.toml uv.lock") < first("uv pip install") < first("COPY app/")
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    assert "--require-hashes" in text and "--frozen" in text
    # Legacy builder: no BuildKit-only syntax.
    assert "--mount" not in text and "<<" not in text
    assert lines[-1].startswith("CMD") and "AS runtime" in text


def test_dockerignore_keeps_secrets_and_local_state_out():
    rules = (REPO / ".dockerignore").read_text().splitlines()
    first = next(r for r in rules if r and not r.startswith("#"))
    assert first == "*", "the context is a whitelist"
    for rule in ("**/.env", "**/__pycache__"):
        assert rule in rules


@pytest.fixture(scope="session")
def checkov(tools):
    def scan(*args: str) -> subprocess.CompletedProcess:
        return sh(
            tools["checkov"],
            "--skip-download",
            "--quiet",
            "--compact",
            "--config-file",
            str(REPO / "tests" / "containers" / "checkov.yaml"),
            *args,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
            timeout=600,
        )

    return scan


def test_checkov_dockerfiles(checkov):
    args = []
    for dockerfile in DOCKERFILES:
        args += ["-f", str(dockerfile)]
    proc = checkov("--framework", "dockerfile", *args)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Passed checks" in proc.stdout


# --- Kubernetes ----------------------------------------------------------------------------


def _render(tools, path: str | Path) -> str:
    proc = sh(tools["kubectl"], "kustomize", str(path))
    assert proc.returncode == 0, f"{path}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def rendered(tools) -> dict[str, str]:
    return {path: _render(tools, path) for path in KUSTOMIZATIONS}


@pytest.fixture(scope="session")
def objects(rendered, yaml_docs) -> dict[str, list[dict]]:
    return {path: yaml_docs(text) for path, text in rendered.items()}


def _split_crds(text: str) -> tuple[str, list[str]]:
    """Rendered YAML -> (the core objects, the documents of CRD kinds the validator lacks)."""
    docs = [d for d in re.split(r"(?m)^---\n", text) if d.strip()]
    custom = [d for d in docs if re.search(rf"(?m)^apiVersion: {CRD_GROUPS}/", d)]
    return "---\n".join(d for d in docs if d not in custom), custom


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates(tools, rendered, tmp_path, path, version):
    # kubernetes-validate only warns about a kind it has no schema for (a CRD such as
    # HTTPRoute, PodMonitor): those are checked by structure (test_gateway_route,
    # test_monitoring.py), the rest by schema.
    core, custom = _split_crds(rendered[path])
    assert bool(custom) == (path in WITH_CRDS)
    target = tmp_path / "rendered.yaml"
    target.write_text(core)
    proc = sh(tools["kubernetes-validate"], "--strict", "--quiet", "-k", version, str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Couldn't find schema" not in proc.stdout + proc.stderr
    assert core.count("\nkind: ") + core.startswith("kind:") >= 1


def test_validator_is_not_vacuous(tools, rendered, tmp_path):
    """The same check fails on a manifest with a misspelt field."""
    broken = rendered["k8s/overlays/dev"].replace("readOnlyRootFilesystem", "readOnlyRootFilesytem")
    target = tmp_path / "broken.yaml"
    target.write_text(broken)
    proc = sh(
        tools["kubernetes-validate"], "--strict", "--quiet", "-k", K8S_VERSIONS[0], str(target)
    )
    assert proc.returncode != 0


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d, d["spec"]["template"]["spec"]


def _containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def _config(docs: list[dict]) -> tuple[str, dict[str, str]]:
    """The one generated chat-config ConfigMap: (its hashed name, its data)."""
    (name,) = [n for n in _by_kind(docs, "ConfigMap") if n.startswith("chat-config")]
    return name, _by_kind(docs, "ConfigMap")[name]["data"]


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def _app_images(docs: list[dict]) -> dict[str, str]:
    """Every container of web, ws and the migrate Job (init containers too) -> its image."""
    return {
        f"{owner['metadata']['name']}/{c['name']}": c["image"]
        for owner, spec in _pod_specs(docs)
        if owner["metadata"]["name"] in {*APP_COMPONENTS, "migrate"}
        for c in _containers(spec)
    }


@pytest.mark.parametrize("path", [*DEPLOYABLE, "k8s/overlays/dev-sentinel", "k8s/loadtest"])
def test_every_pod_is_restricted(objects, path):
    for owner, spec in _pod_specs(objects[path]):
        name = f"{owner['kind']}/{owner['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in _containers(spec):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
            # ws alone runs without a CPU limit, on purpose (docs/deploy.md, "Scaling").
            limits = {"memory"} if owner["metadata"]["name"] in NO_CPU_LIMIT else {"cpu", "memory"}
            assert set(c["resources"]["limits"]) == limits, name
            # A read-only root needs somewhere to write: /tmp is an emptyDir everywhere.
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts or owner["metadata"]["name"].startswith("redis"), name


def test_base_renames_no_image_and_each_overlay_sets_its_own(objects):
    # A rename in the base would run before the overlays' `images:` and leave them
    # matching nothing (the dev overlay then ran registry.example.com/chatstack:0.1.0).
    base = objects["k8s/base"]
    assert set(_app_images(base).values()) == {"chatstack"}
    nginx = _by_kind(base, "Deployment")["nginx"]["spec"]["template"]["spec"]["containers"][0]
    assert nginx["image"] == "chatstack-nginx"
    expected = {
        "k8s/overlays/dev": ("chatstack:local", "chatstack-nginx:local"),
        "k8s/overlays/prod": (
            "registry.example.com/chatstack:0.1.0",
            "registry.example.com/chatstack-nginx:0.1.0",
        ),
    }
    for path in DEPLOYABLE:
        docs = objects[path]
        app, proxy = expected.get(path, expected["k8s/overlays/prod"])
        images = _app_images(docs)
        assert {"web/wait-migrations", "web/web", "ws/wait-migrations", "ws/ws"} <= set(images)
        assert "migrate/migrate" in images
        assert set(images.values()) == {app}, path
        nginx = _by_kind(docs, "Deployment")["nginx"]["spec"]["template"]["spec"]["containers"]
        assert nginx[0]["image"] == proxy, path
    (job,) = _by_kind(objects["k8s/loadtest"], "Job").values()
    images = {c["image"] for c in _containers(job["spec"]["template"]["spec"])}
    assert images == {
        "registry.example.com/chatstack:0.1.0",
        "registry.example.com/chatstack-locust:0.1.0",
    }


@pytest.fixture
def k8s_copy(tmp_path) -> Path:
    """A scratch copy of k8s/ to edit as CI or an operator would, then render."""
    copy = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", copy)
    return copy


def test_a_digest_pinned_in_prod_reaches_every_app_container(tools, yaml_docs, k8s_copy):
    digest = "sha256:" + "0123456789abcdef" * 4
    # What `kustomize edit set image chatstack=registry.example.com/chatstack@sha256:…`
    # writes: the entry keeps its name and newName, loses newTag and gains digest.
    edit = (
        "import sys, yaml\n"
        "path, digest = sys.argv[1:]\n"
        "k = yaml.safe_load(open(path))\n"
        "(entry,) = [i for i in k['images'] if i['name'] == 'chatstack']\n"
        "entry.pop('newTag'); entry['digest'] = digest\n"
        "yaml.safe_dump(k, open(path, 'w'))\n"
    )
    kustomization = k8s_copy / "overlays" / "prod" / "kustomization.yaml"
    proc = sh(tools["python"], "-c", edit, str(kustomization), digest)
    assert proc.returncode == 0, proc.stderr
    for overlay in DEPLOYABLE:
        if overlay == "k8s/overlays/dev":
            continue
        before = yaml_docs(_render(tools, REPO / overlay))
        after = yaml_docs(_render(tools, k8s_copy.parent / overlay))
        images = _app_images(after)
        assert len(images) == 5, images
        assert set(images.values()) == {f"registry.example.com/chatstack@{digest}"}, overlay
        # An app release does not roll nginx: its Deployment is untouched.
        assert _by_kind(after, "Deployment")["nginx"] == _by_kind(before, "Deployment")["nginx"]


def test_a_settings_change_rolls_the_app_but_not_nginx(tools, yaml_docs, k8s_copy, objects):
    env = k8s_copy / "base" / "chat-config.env"
    text = env.read_text()
    assert "\nLOG_LEVEL=INFO\n" in text
    env.write_text(text.replace("\nLOG_LEVEL=INFO\n", "\nLOG_LEVEL=WARNING\n"))
    before = objects["k8s/overlays/prod"]
    after = yaml_docs(_render(tools, k8s_copy / "overlays" / "prod"))
    old, new = _config(before)[0], _config(after)[0]
    assert old != new
    for docs, name in ((before, old), (after, new)):
        for owner, spec in _pod_specs(docs):
            refs = {
                e["configMapRef"]["name"]
                for c in _containers(spec)
                for e in c.get("envFrom", [])
                if "configMapRef" in e
            }
            # nginx takes nothing from chat-config: a settings change does not roll it.
            expected = set() if owner["metadata"]["name"] == "nginx" else {name}
            assert refs == expected, owner["metadata"]["name"]
    assert _by_kind(after, "Deployment")["nginx"] == _by_kind(before, "Deployment")["nginx"]


@pytest.mark.parametrize("path", ["k8s/base", *DEPLOYABLE])
def test_settings_come_from_a_generated_config_map(objects, path):
    docs = objects[path]
    name, config = _config(docs)
    # kustomize appended a hash of the content: a change renames it and rolls the pods.
    assert re.fullmatch(r"chat-config-[a-z0-9]{6,}", name), name
    assert config["CHAT_WS_CONNECTION_BUDGET"].isdigit()
    refs = {
        f"{owner['metadata']['name']}/{c['name']}": {
            next(iter(e.values()))["name"] for e in c.get("envFrom", [])
        }
        for owner, spec in _pod_specs(docs)
        if owner["metadata"]["name"] in {*APP_COMPONENTS, "migrate"}
        for c in _containers(spec)
    }
    assert len(refs) == 5
    for container, names in refs.items():
        assert names == {name, "chat-secrets"}, container


@pytest.mark.parametrize("path", ["k8s/base", *DEPLOYABLE])
def test_no_deployment_under_an_hpa_sets_replicas(objects, path):
    # `kubectl apply` would reset the HPA's count to the manifest's on every apply.
    docs = objects[path]
    deployments = _by_kind(docs, "Deployment")
    targets = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in _by_kind(docs, "HorizontalPodAutoscaler").values()
    }
    assert targets == APP_COMPONENTS
    for name in targets:
        assert "replicas" not in deployments[name]["spec"], name
    # nginx has no HPA: its count stays in the manifest.
    assert deployments["nginx"]["spec"]["replicas"] >= 1


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_app_pods_wait_for_migrations(objects, path):
    docs = objects[path]
    deployments = _by_kind(docs, "Deployment")
    for name in APP_COMPONENTS:
        spec = deployments[name]["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        (main,) = spec["containers"]
        assert init["name"] == "wait-migrations" and init["args"] == ["wait-migrations"]
        assert init["args"][0] in ROLES
        for key in ("image", "envFrom", "securityContext", "resources"):
            assert init[key] == main[key], f"{name}: {key}"
        tmp = {m["mountPath"]: m["name"] for m in init["volumeMounts"]}
        assert tmp == {"/tmp": {m["mountPath"]: m["name"] for m in main["volumeMounts"]}["/tmp"]}
    # The Job that migrates: re-appliable for the next release with no manual delete.
    job = _by_kind(docs, "Job")["migrate"]
    annotations = job["metadata"]["annotations"]
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 600
    assert annotations["argocd.argoproj.io/hook"] == "Sync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert annotations["kustomize.toolkit.fluxcd.io/force"] == "enabled"
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def test_the_wait_migrations_role_exists():
    source = (REPO / "app" / "entrypoint.py").read_text()
    roles = re.search(r"^ROLES = \((.*)\)$", source, re.M).group(1)
    assert '"wait-migrations"' in roles and '"migrate"' in roles


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_app_tiers(objects, path):
    docs = objects[path]
    deployments = _by_kind(docs, "Deployment")
    assert {"web", "ws", "nginx"} <= set(deployments)
    config = _config(docs)[1]
    for name in APP_COMPONENTS:
        d = deployments[name]
        spec = d["spec"]["template"]["spec"]
        (c,) = spec["containers"]
        assert c["args"] == [name] and c["args"][0] in ROLES
        assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        keys = {t["topologyKey"] for t in spec["topologySpreadConstraints"]}
        assert "kubernetes.io/hostname" in keys
    # Both drain inside their grace period: out of the endpoints first (preStop sleep, so
    # Kubernetes >= 1.30), then SIGTERM: ws closes sockets with 1012 within
    # CHAT_DRAIN_TIMEOUT, gunicorn finishes requests within GUNICORN_GRACEFUL_TIMEOUT.
    for name, budget in (("ws", "CHAT_DRAIN_TIMEOUT"), ("web", "GUNICORN_GRACEFUL_TIMEOUT")):
        spec = deployments[name]["spec"]["template"]["spec"]
        pause = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause >= 5, name
        assert spec["terminationGracePeriodSeconds"] >= pause + float(config[budget]) + 5, name
    # nginx reaches each tier through its headless Service, by full name (nginx's resolver
    # ignores search domains), re-resolved at run time.
    nginx = deployments["nginx"]["spec"]["template"]["spec"]["containers"][0]
    env = [e["name"] for e in nginx["env"]]
    values = {e["name"]: e.get("value") for e in nginx["env"]}
    namespace = next(e for e in nginx["env"] if e["name"] == "POD_NAMESPACE")
    assert namespace["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert values["NGINX_RESOLVER"] == "auto"
    services = _by_kind(docs, "Service")
    for tier in APP_COMPONENTS:
        variable = f"CHAT_{tier.upper()}_UPSTREAM"
        # $(POD_NAMESPACE) expands only if defined earlier in the list.
        assert env.index("POD_NAMESPACE") < env.index(variable)
        assert values[variable] == f"{tier}-pods.$(POD_NAMESPACE).svc.cluster.local:8000"
        headless = services[f"{tier}-pods"]["spec"]
        assert headless["clusterIP"] == "None" and headless["publishNotReadyAddresses"] is False
        assert headless["selector"] == services[tier]["spec"]["selector"]
        assert [(p["port"], p["targetPort"]) for p in headless["ports"]] == [(8000, "http")]
    # Every Service selects pods that exist, on a named port they expose.
    pods = [d["spec"]["template"] for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    for name, svc in services.items():
        selector = svc["spec"]["selector"]
        matching = [p for p in pods if selector.items() <= p["metadata"]["labels"].items()]
        assert matching, name
        ports = {p["name"] for t in matching for c in t["spec"]["containers"] for p in c["ports"]}
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= ports, name


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_one_connection_budget_sizes_nginx_ws_memory_and_the_hpa(objects, path):
    docs = objects[path]
    budget = int(_config(docs)[1]["CHAT_WS_CONNECTION_BUDGET"])
    deployments = _by_kind(docs, "Deployment")
    nginx = deployments["nginx"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in nginx["env"]}["NGINX_CONNECTION_BUDGET"] == str(
        budget
    )
    # ws memory: reserved as much as it may use (request = limit), enough for the budget
    # at 64 KiB a socket (a margin over what docs/benchmarks.md measures) over a
    # 160 MiB process; a CPU request and no CPU limit.
    ws = deployments["ws"]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert ws["requests"]["memory"] == ws["limits"]["memory"]
    assert _bytes(ws["limits"]["memory"]) >= 160 * 2**20 + budget * 64 * 2**10
    assert "cpu" in ws["requests"] and "cpu" not in ws["limits"]
    # With the connection-autoscaling component, the ws HPA's per-pod target is the budget.
    metrics = _by_kind(docs, "HorizontalPodAutoscaler")["ws"]["spec"]["metrics"]
    assert [m["resource"]["name"] for m in metrics if m["type"] == "Resource"] == ["cpu"]
    pods = [m["pods"] for m in metrics if m["type"] == "Pods"]
    if path == "k8s/overlays/connection-autoscaling":
        (metric,) = pods
        assert metric["metric"]["name"] == "chat_ws_connections"
        assert metric["target"] == {"type": "AverageValue", "averageValue": str(budget)}
    else:
        assert pods == []


def test_base_budget_is_4000(objects):
    assert _config(objects["k8s/base"])[1]["CHAT_WS_CONNECTION_BUDGET"] == "4000"


def test_connection_autoscaling_component_and_its_adapter_rule(tools, yaml_docs):
    component = REPO / "k8s" / "components" / "connection-autoscaling"
    (kustomization,) = yaml_docs((component / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    # The adapter rule is an example for the monitoring stack, never applied with the app.
    assert "resources" not in kustomization
    (values,) = yaml_docs((component / "prometheus-adapter-values.yaml").read_text())
    (rule,) = values["rules"]["custom"]
    # It serves, per pod, the gauge the app exports under the name the HPA asks for.
    assert rule["name"]["as"] == "chat_ws_connections"
    assert rule["seriesQuery"].startswith("chat_ws_connections{")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    metrics = (REPO / "app" / "chat" / "metrics.py").read_text()
    assert 'Gauge("chat_ws_connections"' in metrics


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_autoscaling_and_disruption_budgets(objects, path):
    docs = objects[path]
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == APP_COMPONENTS
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == name
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    pdbs = _by_kind(docs, "PodDisruptionBudget")
    deployments = _by_kind(docs, "Deployment")
    assert set(pdbs) == {"web", "ws", "nginx"}
    for name, pdb in pdbs.items():
        assert pdb["apiVersion"] == "policy/v1"
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


# NetworkPolicy semantics, enough to ask "may this pod reach that one on this port?" of the
# rendered policies (the CNI's enforcement itself is a cluster-only assumption).


def _selects(selector: dict, labels: dict) -> bool:
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        present = e["key"] in labels
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "NotIn" and present and labels[e["key"]] in e["values"]:
            return False
        if e["operator"] == "Exists" and not present:
            return False
        if e["operator"] == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: dict, namespace: str, other: dict) -> bool:
    """`other`: {"namespace", "labels"} of a pod, or {"ip"} of an address outside."""
    if "ipBlock" in peer:
        if "ip" not in other:
            return False  # pod addresses are for selectors, not ipBlocks
        block = peer["ipBlock"]
        address = ipaddress.ip_address(other["ip"])
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(cidr) for cidr in block.get("except", [])
        )
    if "ip" in other:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": other["namespace"]}
        if not _selects(peer["namespaceSelector"], ns_labels):
            return False
    elif other["namespace"] != namespace:
        return False
    return _selects(peer.get("podSelector", {}), other["labels"])


def _allowed(
    policies, namespace, direction, pod: dict, other: dict, port: int, protocol="TCP", names=None
) -> bool:
    """Whether `pod` (labels) may send to (Egress) / receive from (Ingress) `other` on
    `port`; `names`: the named ports of the receiving pod."""
    key = "egress" if direction == "Egress" else "ingress"
    side = "to" if direction == "Egress" else "from"
    selecting = [
        p["spec"]
        for p in policies
        if direction in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], pod)
    ]
    if not selecting:
        return True
    for spec in selecting:
        for rule in spec.get(key, []):
            ports = rule.get("ports")
            if ports and not any(
                p.get("protocol", "TCP") == protocol
                and (p.get("port") in (None, port) or (names or {}).get(p["port"]) == port)
                for p in ports
            ):
                continue
            peers = rule.get(side)
            if not peers or any(_peer_matches(peer, namespace, other) for peer in peers):
                return True
    return False


def _labels(docs: list[dict]) -> dict[str, dict]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
        for d, _ in _pod_specs(docs)
    }


def _named_ports(docs: list[dict]) -> dict[str, dict[str, int]]:
    return {
        d["metadata"]["name"]: {
            p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])
        }
        for d, spec in _pod_specs(docs)
    }


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_network_policies(objects, path):
    docs = objects[path]
    policies = list(_by_kind(docs, "NetworkPolicy").values())
    namespace = _by_kind(docs, "Namespace").popitem()[0]
    names = {p["metadata"]["name"] for p in policies}
    deny = _by_kind(docs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    pods, ports = _labels(docs), _named_ports(docs)
    assert {"web", "ws", "nginx", "migrate"} <= set(pods)

    def egress(src: str, dst: str | dict, port: int, protocol: str = "TCP") -> bool:
        if not isinstance(dst, str):
            return _allowed(policies, namespace, "Egress", pods[src], dst, port, protocol)
        # An in-namespace pod is reached only if its own ingress admits it as well.
        here = {"namespace": namespace, "labels": pods[src]}
        there = {"namespace": namespace, "labels": pods[dst]}
        return _allowed(
            policies, namespace, "Egress", pods[src], there, port, protocol, ports[dst]
        ) and _allowed(policies, namespace, "Ingress", pods[dst], here, port, protocol, ports[dst])

    kube_dns = {"namespace": "kube-system", "labels": {"k8s-app": "kube-dns"}}
    node_local_dns = {"ip": "169.254.20.10"}
    outside = {"ip": "203.0.113.7"}
    for name in pods:
        # Every pod resolves names, through CoreDNS or NodeLocal DNSCache, on UDP and TCP...
        for server in (kube_dns, node_local_dns):
            for protocol in ("UDP", "TCP"):
                assert egress(name, server, 53, protocol), (name, server, protocol)
        # ... and reaches nothing else out there (default-deny egress).
        assert not egress(name, outside, 443), name
        assert not egress(name, {"ip": "169.254.169.254"}, 80), name
        assert not egress(name, {"namespace": "kube-system", "labels": {"k8s-app": "x"}}, 53, "UDP")
    # nginx reaches the web and ws pods on 8000, and they admit nobody else (but Prometheus).
    for tier in APP_COMPONENTS:
        assert egress("nginx", tier, 8000), tier
        assert not egress("nginx", tier, 8001), tier
    assert not egress("web", "ws", 8000) and not egress("ws", "web", 8000)
    prometheus = {"namespace": "monitoring", "labels": {"app": "prometheus"}}
    stranger = {"namespace": "other", "labels": {}}
    assert _allowed(policies, namespace, "Ingress", pods["ws"], prometheus, 8000)
    assert not _allowed(policies, namespace, "Ingress", pods["ws"], stranger, 8000)
    # nginx admits its port (from the edge, as the overlay narrows it) and no other.
    edge = {"namespace": "ingress-nginx", "labels": {}}
    nginx_ports = ports["nginx"]
    assert not _allowed(
        policies, namespace, "Ingress", pods["nginx"], edge, 9000, names=nginx_ports
    )
    # The app (web, ws, migrate) reaches the data stores; nginx does not.
    if "postgres" in pods:  # dev: in-namespace pods
        assert "app-egress" in names
        for client in ("web", "ws", "migrate"):
            assert egress(client, "postgres", 5432) and egress(client, "redis", 6379), client
            assert not egress(client, "postgres", 6379), client
            # Only to those pods: nothing outside the namespace on the stores' ports.
            assert not egress(client, outside, 5432) and not egress(client, outside, 6379)
        for store in ("postgres", "redis"):
            assert not egress("nginx", store, 5432) and not egress("nginx", store, 6379)
            assert not egress(store, outside, 443)
    else:  # prod: managed services outside the cluster, on their ports
        database = {"ip": "10.20.30.40"}
        for client in ("web", "ws", "migrate"):
            # PostgreSQL; Redis plain, TLS, and its sentinels (docs/deploy.md, "Redis").
            for port in (5432, 6379, 6380, 26379):
                assert egress(client, database, port), (client, port)
            assert not egress(client, database, 22), client
            assert not egress(client, {"ip": "169.254.169.254"}, 5432), client
        assert not egress("nginx", database, 5432)
    # Only the app's pods carry the label the data stores admit.
    clients = {n for n, labels in pods.items() if labels.get("chatstack/data-client") == "true"}
    assert clients == {"web", "ws", "migrate"}
    app = _by_kind(docs, "NetworkPolicy")["app"]["spec"]
    assert set(app["podSelector"]["matchExpressions"][0]["values"]) == APP_COMPONENTS


def test_the_load_test_reaches_nginx_and_the_database_in_dev(objects):
    dev, loadtest = objects["k8s/overlays/dev"], objects["k8s/loadtest"]
    policies = [d for d in dev + loadtest if d["kind"] == "NetworkPolicy"]
    pods, ports = _labels(dev) | _labels(loadtest), _named_ports(dev)
    ns = "chatstack-dev"

    def reach(policies: list[dict], src: str, dst: str, port: int) -> bool:
        there = {"namespace": ns, "labels": pods[dst]}
        here = {"namespace": ns, "labels": pods[src]}
        return _allowed(policies, ns, "Egress", pods[src], there, port, names=ports[dst]) and (
            _allowed(policies, ns, "Ingress", pods[dst], here, port, names=ports[dst])
        )

    assert reach(policies, "locust", "nginx", 8080) and reach(policies, "locust", "postgres", 5432)
    assert not reach(policies, "locust", "ws", 8000)
    # Without the load test's own policies, the overlay keeps Locust out.
    dev_only = [d for d in dev if d["kind"] == "NetworkPolicy"]
    assert not reach(dev_only, "locust", "nginx", 8080)


def test_dev_runs_its_own_data_stores_on_volumes(objects):
    docs = objects["k8s/overlays/dev"]
    sets = _by_kind(docs, "StatefulSet")
    assert set(sets) == {"postgres", "redis"}
    for s in sets.values():
        assert s["spec"]["volumeClaimTemplates"][0]["spec"]["accessModes"] == ["ReadWriteOnce"]
    policies = _by_kind(docs, "NetworkPolicy")
    for store in ("postgres", "redis"):
        (rule,) = policies[store]["spec"]["ingress"]
        assert rule["from"] == [{"podSelector": {"matchLabels": {"chatstack/data-client": "true"}}}]
    secret = _by_kind(docs, "Secret")["chat-secrets"]["stringData"]
    assert all("example" in v or v.startswith("redis://") for v in secret.values())
    assert (
        "postgres:5432" in secret["DATABASE_URL"] and secret["REDIS_URL"] == "redis://redis:6379/0"
    )
    config = _config(docs)[1]
    assert config["HTTPS"] == "0" and "localhost" in config["ALLOWED_HOSTS"].split(",")


def test_prod_takes_data_stores_from_an_existing_secret_and_scales_up(objects):
    prod, dev = objects["k8s/overlays/prod"], objects["k8s/overlays/dev"]
    assert "Secret" not in {d["kind"] for d in prod}, "prod's Secret is created outside git"
    assert "StatefulSet" not in {d["kind"] for d in prod}
    for name in APP_COMPONENTS:
        big, small = (_by_kind(d, "HorizontalPodAutoscaler")[name]["spec"] for d in (prod, dev))
        assert (
            big["minReplicas"] > small["minReplicas"] and big["maxReplicas"] > small["maxReplicas"]
        )
    replicas = [_by_kind(d, "Deployment")["nginx"]["spec"]["replicas"] for d in (prod, dev)]
    assert replicas[0] > replicas[1]
    assert {d["metadata"]["namespace"] for d in prod if d["kind"] != "Namespace"} == {"chatstack"}
    ingress = _by_kind(objects["k8s/overlays/ingress"], "Ingress")["chat"]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


@pytest.mark.parametrize("path", ["k8s/overlays/ingress", "k8s/overlays/gateway"])
def test_behind_a_proxy_nginx_trusts_it_alone(objects, path):
    docs = objects[path]
    nginx = _by_kind(docs, "Deployment")["nginx"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in nginx["env"]}
    for cidr in env["NGINX_REAL_IP_FROM"].split(","):
        ipaddress.ip_network(cidr)
    (rule,) = _by_kind(docs, "NetworkPolicy")["nginx"]["spec"]["ingress"]
    (peer,) = rule["from"]
    assert set(peer) == {"namespaceSelector"}


def test_gateway_route(rendered, objects, yaml_docs):
    docs = objects["k8s/overlays/gateway"]
    (route,) = yaml_docs("---\n".join(_split_crds(rendered["k8s/overlays/gateway"])[1]))
    assert route == _by_kind(docs, "HTTPRoute")["chat"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["namespace"] == "chatstack"
    spec = route["spec"]
    (parent,) = spec["parentRefs"]
    assert parent["kind"] == "Gateway" and parent["group"] == "gateway.networking.k8s.io"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", parent["name"])
    assert set(spec["hostnames"]) <= set(_config(docs)[1]["ALLOWED_HOSTS"].split(","))
    services = _by_kind(docs, "Service")
    prefixes = {}
    for rule in spec["rules"]:
        (match,) = rule["matches"]
        assert match["path"]["type"] == "PathPrefix"
        prefixes[match["path"]["value"]] = rule
        for ref in rule["backendRefs"]:
            # A Service of this namespace, on a port it has (kind defaults to Service).
            assert ref.get("kind", "Service") == "Service" and "namespace" not in ref
            assert ref["port"] in {p["port"] for p in services[ref["name"]]["spec"]["ports"]}
        for value in rule.get("timeouts", {}).values():
            assert re.fullmatch(r"([0-9]{1,5}(h|m|s|ms)){1,4}", value), value
    assert set(prefixes) == {"/", "/ws/"}
    # Everything through the in-cluster nginx, which balances WebSockets per ws pod.
    for rule in prefixes.values():
        assert [r["name"] for r in rule["backendRefs"]] == ["nginx"]
    # A WebSocket is one long request: no request timeout on /ws/.
    assert prefixes["/ws/"]["timeouts"]["request"] == "0s"


def test_locust_job(objects):
    (job,) = _by_kind(objects["k8s/loadtest"], "Job").values()
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["args"][:2] == ["manage", "create_users"]
    # Its namespace's chat-config has a hashed name: the init container takes none.
    assert [e for e in spec["initContainers"][0]["envFrom"] if "configMapRef" in e] == []
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["LOCUST_HOST"] == "http://nginx" and env["LOCUST_HEADLESS"] == "true"
    assert spec["containers"][0]["args"][-1] == "/srv/loadtests/locustfile.py"
    assert (REPO / "loadtests" / "locustfile.py").exists()


def test_checkov_kubernetes(checkov, rendered, tmp_path):
    # What is deployed: the overlays (the base alone has no namespace) and the load test.
    for path, text in rendered.items():
        if path == "k8s/base":
            continue
        (tmp_path / (path.replace("/", "_") + ".yaml")).write_text(text)
    proc = checkov("--framework", "kubernetes", "-d", str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert "Passed checks" in proc.stdout


# --- compose -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compose_env(tmp_path_factory) -> Path:
    env = tmp_path_factory.mktemp("compose-env") / "min.env"
    env.write_text("SECRET_KEY=static-check-only\nPOSTGRES_PASSWORD=static-check-only\n")
    return env


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_compose_file_users_run(tools, yaml_docs, compose_env, tool):
    def config(*args: str) -> dict:
        proc = sh(
            tools[tool],
            "--env-file",
            str(compose_env),
            "-f",
            "compose/compose.yaml",
            *args,
            "config",
        )
        assert proc.returncode == 0, proc.stderr
        return yaml_docs(proc.stdout)[0]

    cfg = config()
    services = cfg["services"]
    assert {"postgres", "redis", "migrate", "web", "ws", "nginx"} <= set(services)
    # Users get the official images for the data stores; only the app and nginx are built.
    assert services["postgres"]["image"].startswith("postgres:")
    assert services["redis"]["image"].startswith("redis:")
    assert "build" not in services["postgres"] and "build" not in services["redis"]
    assert int(services["ws"]["deploy"]["replicas"]) == 3
    assert services["nginx"]["build"]["target"] == "nginx"
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["nginx"]["depends_on"]["ws"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("migrate", "web", "ws", "nginx"):
        assert services[name]["read_only"] is True, name
        assert services[name]["cap_drop"] == ["ALL"], name
    assert "pgdata" in cfg["volumes"]
    assert cfg["networks"]["data"]["internal"] is True
    # Only nginx publishes a port.
    assert [n for n, s in services.items() if s.get("ports") and not s.get("profiles")] == ["nginx"]
    # The load test services exist, behind their profile.
    loadtest = config("--profile", "loadtest")["services"]
    for name in ("locust-tokens", "locust-master", "locust-worker"):
        assert loadtest[name]["profiles"] == ["loadtest"]
    assert "/srv/loadtests/locustfile.py" in loadtest["locust-master"]["command"]


@pytest.mark.parametrize("tool", ["compose-v1", "compose-v2"])
def test_compose_refuses_to_start_without_secrets(tools, tmp_path, tool):
    env = tmp_path / "empty.env"
    env.write_text("POSTGRES_PASSWORD=x\n")
    proc = sh(tools[tool], "--env-file", str(env), "-f", "compose/compose.yaml", "config")
    assert proc.returncode != 0
    assert "SECRET_KEY" in proc.stdout + proc.stderr
