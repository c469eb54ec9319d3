"""What can be proven without running a container: lint, policy and schema checks.

- hadolint passes on every Dockerfile;
- every kustomization renders (`kubectl kustomize`) and validates against the Kubernetes
  schemas of 1.31 and of the newest version kubernetes-validate knows, strictly;
- the rendered manifests have what ops need (securityContext, probes, drain, HPA, PDB,
  NetworkPolicies…) and checkov finds nothing on them or on the Dockerfiles beyond the
  exceptions justified in tests/containers/checkov.yaml and next to the code;
- the compose file parses with docker-compose 1.29 and Docker Compose v2+ alike, keeps
  the official images for users, and refuses to start without its secrets.
"""

from __future__ import annotations

import os
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
    "k8s/loadtest",
]
DEPLOYABLE = ["k8s/overlays/dev", "k8s/overlays/prod", "k8s/overlays/ingress"]
# The oldest Kubernetes the manifests promise (native preStop sleep, autoscaling/v2,
# policy/v1), and the newest the validator has schemas for.
K8S_VERSIONS = ["1.31.0", "1.37.0"]
APP_COMPONENTS = {"web", "ws"}
ROLES = {"web", "ws", "migrate", "collectstatic", "manage"}


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


@pytest.fixture(scope="session")
def rendered(tools) -> dict[str, str]:
    out = {}
    for path in KUSTOMIZATIONS:
        proc = sh(tools["kubectl"], "kustomize", path)
        assert proc.returncode == 0, f"{path}: {proc.stderr}"
        out[path] = proc.stdout
    return out


@pytest.fixture(scope="session")
def objects(rendered, yaml_docs) -> dict[str, list[dict]]:
    return {path: yaml_docs(text) for path, text in rendered.items()}


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_kustomization_renders_and_validates(tools, rendered, tmp_path, path, version):
    target = tmp_path / "rendered.yaml"
    target.write_text(rendered[path])
    proc = sh(tools["kubernetes-validate"], "--strict", "--quiet", "-k", version, str(target))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rendered[path].count("\nkind: ") + rendered[path].startswith("kind:") >= 1


def test_validator_is_not_vacuous(tools, rendered, tmp_path):
    """The same check fails on a manifest with a misspelt field."""
    broken = rendered["k8s/overlays/dev"].replace("readOnlyRootFilesystem", "readOnlyRootFilesytem")
    target = tmp_path / "broken.yaml"
    target.write_text(broken)
    proc = sh(tools["kubernetes-validate"], "--strict", "--quiet", "-k", "1.31.0", str(target))
    assert proc.returncode != 0


def _by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield d, d["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", [*DEPLOYABLE, "k8s/loadtest"])
def test_every_pod_is_restricted(objects, path):
    for owner, spec in _pod_specs(objects[path]):
        name = f"{owner['kind']}/{owner['metadata']['name']}"
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in sc["capabilities"], name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{name} {kind}"
            # A read-only root needs somewhere to write: /tmp is an emptyDir everywhere.
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts or owner["metadata"]["name"] == "redis", name


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_app_tiers(objects, path):
    docs = objects[path]
    deployments = _by_kind(docs, "Deployment")
    assert {"web", "ws", "nginx"} <= set(deployments)
    config = _by_kind(docs, "ConfigMap")["chat-config"]["data"]
    for name in ("web", "ws"):
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
        refs = {next(iter(e.values()))["name"] for e in c["envFrom"]}
        assert refs == {"chat-config", "chat-secrets"}
    # ws drains: out of the endpoints (preStop), then SIGTERM closes sockets with 1012
    # within CHAT_DRAIN_TIMEOUT, all inside the grace period.
    ws = deployments["ws"]["spec"]["template"]["spec"]
    pause = ws["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(config["CHAT_DRAIN_TIMEOUT"])
    assert pause > 0 and ws["terminationGracePeriodSeconds"] >= pause + drain + 5
    nginx = deployments["nginx"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in nginx["env"]}
    assert env["CHAT_WEB_UPSTREAM"] == "web:8000" and env["CHAT_WS_UPSTREAM"] == "ws:8000"
    # Every Service selects pods that exist, on a named port they expose.
    pod_labels = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    for name, svc in _by_kind(docs, "Service").items():
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name
    # The migration Job runs the migrate role of the same image.
    job = _by_kind(docs, "Job")["migrate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["migrate"]
    assert job["image"] == deployments["web"]["spec"]["template"]["spec"]["containers"][0]["image"]


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_autoscaling_and_disruption_budgets(objects, path):
    docs = objects[path]
    hpas = _by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"web", "ws"}
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


@pytest.mark.parametrize("path", DEPLOYABLE)
def test_network_policies(objects, path):
    docs = objects[path]
    policies = _by_kind(docs, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    app = policies["app"]["spec"]
    assert set(app["podSelector"]["matchExpressions"][0]["values"]) == APP_COMPONENTS
    sources = [peer for rule in app["ingress"] for peer in rule["from"]]
    pod_sources = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
    assert pod_sources == [
        {"app.kubernetes.io/instance": "chatstack", "app.kubernetes.io/component": "nginx"}
    ]
    # Only the app's pods carry the label the data stores admit.
    clients = {
        d["metadata"]["name"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
        and d["spec"]["template"]["metadata"]["labels"].get("chatstack/data-client") == "true"
    }
    assert clients == {"web", "ws", "migrate"}


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


def test_prod_takes_data_stores_from_an_existing_secret_and_scales_up(objects):
    prod, dev = objects["k8s/overlays/prod"], objects["k8s/overlays/dev"]
    assert "Secret" not in {d["kind"] for d in prod}, "prod's Secret is created outside git"
    assert "StatefulSet" not in {d["kind"] for d in prod}
    for name in ("web", "ws", "nginx"):
        assert (
            _by_kind(prod, "Deployment")[name]["spec"]["replicas"]
            > _by_kind(dev, "Deployment")[name]["spec"]["replicas"]
        )
    assert {d["metadata"]["namespace"] for d in prod if d["kind"] != "Namespace"} == {"chatstack"}
    ingress = _by_kind(objects["k8s/overlays/ingress"], "Ingress")["chat"]
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_locust_job(objects):
    (job,) = objects["k8s/loadtest"]
    spec = job["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["args"][:2] == ["manage", "create_users"]
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
