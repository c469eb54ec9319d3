"""The monitoring component (k8s/components/monitoring): its alert rules and scrape objects.

- the rules are one source, the PrometheusRule: `rules-file.sh` prints its `spec` as the
  plain Prometheus rules file, and that is the same YAML;
- `promtool check rules` passes on it, and `promtool test rules` runs
  tests/containers/prometheus/alerts.test.yaml (series in, alerts out) against it, a test
  that fails when a threshold changes;
- every alert has a `for:`, a severity and a summary and description; every `chat_*`
  metric the rules name is declared in app/chat/metrics.py (tests/stack/test_monitoring.py
  proves each one is on a running stack's /metrics), and the others are the
  kube-state-metrics and Prometheus series listed in EXTERNAL;
- `k8s/overlays/monitoring` renders; its core objects are validated against the Kubernetes
  schemas in test_static.py like every overlay's. The validator has no schema for the
  Prometheus Operator's CRDs (PodMonitor, PrometheusRule), so those are checked here by
  structure: the fields the Operator reads, and that each PodMonitor selects the pods of
  its tier on the port and path they serve /metrics on.

promtool comes from Debian's `prometheus` package (.ci/run installs it); without it the
promtool tests skip and say so, but fail under CI (CI set, as .ci/run's runs have it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import REPO

COMPONENT = REPO / "k8s" / "components" / "monitoring"
SOURCE = COMPONENT / "prometheus-rules.yaml"
RULES_FILE_SCRIPT = COMPONENT / "rules-file.sh"
UNIT_TESTS = REPO / "tests" / "containers" / "prometheus" / "alerts.test.yaml"
OVERLAY = "k8s/overlays/monitoring"
METRICS_PY = REPO / "app" / "chat" / "metrics.py"
# Series the rules use that the app does not export: kube-state-metrics' and Prometheus's.
EXTERNAL = {
    "kube_pod_status_ready",
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
    "up",
}
SEVERITIES = {"critical", "warning", "info"}
# What an identifier in PromQL can be besides a metric name.
PROMQL_WORDS = {
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "group",
    "and",
    "or",
    "unless",
    "rate",
    "increase",
    "histogram_quantile",
    "inf",
    "bool",
}


def sh(*cmd: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    # CI (.ci/run, which sets CI=true) installs it: missing there is a failure.
    assert path or not os.environ.get("CI"), "promtool is missing: .ci/run installs it"
    if not path:
        pytest.skip(
            "promtool not found: install Debian's `prometheus` package "
            "(apt-get install --no-install-recommends prometheus; .ci/run does)"
        )
    return path


@pytest.fixture(scope="session")
def rules_text() -> str:
    proc = sh("sh", str(RULES_FILE_SCRIPT))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="session")
def source(yaml_docs) -> dict:
    (doc,) = yaml_docs(SOURCE.read_text())
    return doc


@pytest.fixture(scope="session")
def rules(source) -> list[dict]:
    return [rule for group in source["spec"]["groups"] for rule in group["rules"]]


def _write_rules(directory: Path, text: str) -> Path:
    path = directory / "chatstack.rules.yml"
    path.write_text(text)
    shutil.copyfile(UNIT_TESTS, directory / UNIT_TESTS.name)
    return path


def test_the_rules_file_is_the_prometheus_rule_spec(yaml_docs, rules_text, source):
    (plain,) = yaml_docs(rules_text)
    assert plain == source["spec"]
    assert source["apiVersion"] == "monitoring.coreos.com/v1"
    assert source["kind"] == "PrometheusRule"


def test_promtool_check_rules(promtool, rules_text, rules, tmp_path):
    path = _write_rules(tmp_path, rules_text)
    proc = sh(promtool, "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_promtool_unit_tests(promtool, rules_text, tmp_path):
    _write_rules(tmp_path, rules_text)
    proc = sh(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout


@pytest.mark.parametrize(
    "old, new",
    [
        (
            "(increase(chat_layer_dropped_total[5m])) > 0",
            "(increase(chat_layer_dropped_total[5m])) > 9",
        ),
        ("(chat_dependency_up) == 0", "(chat_dependency_up) == 2"),
        (
            "(rate(chat_fanout_seconds_bucket[5m]))) > 0.25",
            "(rate(chat_fanout_seconds_bucket[5m]))) > 0.5",
        ),
    ],
    ids=["layer-drops", "dependency-down", "fanout-p99"],
)
def test_promtool_unit_tests_are_not_vacuous(promtool, rules_text, tmp_path, old, new):
    """The unit tests fail when an alert's threshold moves."""
    assert rules_text.count(old) == 1, old
    _write_rules(tmp_path, rules_text.replace(old, new))
    proc = sh(promtool, "test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout


def test_every_rule_is_an_alert_that_says_what_to_do(source, rules):
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), names
    for group in source["spec"]["groups"]:
        assert group["name"].startswith("chatstack-"), group["name"]
    for rule in rules:
        name = rule["alert"]
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert set(rule["annotations"]) == {"summary", "description"}, name
        assert len(rule["annotations"]["description"]) > 80, name


def _metric_names(expr: str) -> set[str]:
    """The series an expression reads: identifiers that are not functions, keywords or
    label names (in braces, or in by/on/… lists)."""
    text = re.sub(r'"[^"]*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    names = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def _declared_metrics() -> dict[str, str]:
    """Metric name -> type, as app/chat/metrics.py declares them."""
    source = METRICS_PY.read_text()
    found = re.findall(r'\b(Counter|Gauge|Histogram)\(\s*"(chat_[a-z0-9_]+)"', source)
    return {name: kind for kind, name in found}


def test_rules_name_only_metrics_that_exist(rules):
    declared = _declared_metrics()
    assert len(declared) > 20
    used = set().union(*(_metric_names(rule["expr"]) for rule in rules))
    for name in used - EXTERNAL:
        base = re.sub(r"_(bucket|count|sum)$", "", name)
        kind = declared.get(name) or declared.get(base)
        assert kind, f"{name}: not in app/chat/metrics.py"
        if base != name:
            assert declared[base] == "Histogram", name
    assert used >= EXTERNAL, "EXTERNAL lists a series no rule uses"
    # What the issue asks the alerts to watch, each by its metric.
    for name in (
        "chat_layer_dropped_total",
        "chat_fanout_seconds_bucket",
        "chat_ws_frames_queued_total",
        "chat_ws_slow_disconnects_total",
        "chat_http_requests_total",
        "chat_ws_connections",
        "chat_ws_admission_refusals_total",
        "chat_dependency_up",
        "chat_layer_errors_total",
        "chat_redis_failovers_seen_total",
        "chat_pg_pool_timeouts_total",
        "kube_pod_status_ready",
    ):
        assert name in used, name
    # The 5xx ratio needs the status label: the counter has it.
    assert re.search(
        r'"chat_http_requests_total",[^)]*\["method", "status"\]', METRICS_PY.read_text()
    )


def test_the_fanout_target_is_a_bucket_boundary(rules):
    """histogram_quantile interpolates within a bucket: a target on a boundary is exact."""
    (rule,) = [r for r in rules if r["alert"] == "ChatFanoutSlow"]
    target = float(re.search(r"> ([0-9.]+)$", rule["expr"].strip()).group(1))
    buckets = re.search(
        r'"chat_fanout_seconds",.*?buckets=\(([^)]*)\)', METRICS_PY.read_text(), re.S
    )
    assert target in {float(b) for b in buckets.group(1).split(",")}


# --- the component, rendered ---------------------------------------------------------------


def _render(tools, path: str | Path) -> str:
    proc = sh(tools["kubectl"], "kustomize", str(path))
    assert proc.returncode == 0, f"{path}: {proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="session")
def overlay(tools, yaml_docs) -> list[dict]:
    return yaml_docs(_render(tools, OVERLAY))


def _one(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _budget(docs: list[dict]) -> str:
    (config,) = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("chat-config")
    ]
    return config["data"]["CHAT_WS_CONNECTION_BUDGET"]


def test_the_component_is_opt_in(yaml_docs):
    (kustomization,) = yaml_docs((COMPONENT / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    for other in (REPO / "k8s").rglob("kustomization.yaml"):
        if other.parent.name == "monitoring":
            continue
        assert "components/monitoring" not in other.read_text(), other


def test_pod_monitors_scrape_every_pod_of_each_tier(overlay):
    namespace = _one(overlay, "Deployment", "ws")["metadata"]["namespace"]
    for tier in ("ws", "web"):
        monitor = _one(overlay, "PodMonitor", f"chatstack-{tier}")
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["namespace"] == namespace
        assert monitor["metadata"]["labels"]["app.kubernetes.io/part-of"] == "chatstack"
        spec = monitor["spec"]
        # Its own namespace only (no namespaceSelector), the tier's pods alone.
        assert set(spec) == {"selector", "podMetricsEndpoints"}, tier
        selector = spec["selector"]["matchLabels"]
        pods = [
            d["spec"]["template"]
            for d in overlay
            if d["kind"] in ("Deployment", "StatefulSet", "Job")
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pods] == [tier]
        (template,) = pods
        (endpoint,) = spec["podMetricsEndpoints"]
        annotations = template["metadata"]["annotations"]
        (container,) = template["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[endpoint["port"]] == int(annotations["prometheus.io/port"])
        assert endpoint["path"] == annotations["prometheus.io/path"] == "/metrics"
        assert re.fullmatch(r"[0-9]+s", endpoint["interval"])
        assert int(endpoint["scrapeTimeout"][:-1]) < int(endpoint["interval"][:-1])
        (relabel,) = endpoint["relabelings"]
        assert relabel == {
            "action": "replace",
            "targetLabel": "job",
            "replacement": f"chatstack-{tier}",
        }


def test_the_rendered_rule_is_the_source_with_the_overlays_budget(overlay, source):
    rule = _one(overlay, "PrometheusRule", "chatstack")
    assert (
        rule["metadata"]["namespace"] == _one(overlay, "Deployment", "ws")["metadata"]["namespace"]
    )
    budget = _budget(overlay)
    expected = source["spec"]
    # The source carries the base's budget, so the plain rules file has it too.
    text = str(expected)
    assert f"(chat_ws_connections) > {budget}" in text
    assert rule["spec"] == expected


def test_a_changed_budget_reaches_the_connection_alert(tools, yaml_docs, tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(REPO / "k8s", copy)
    env = copy / "base" / "chat-config.env"
    text = env.read_text()
    assert "\nCHAT_WS_CONNECTION_BUDGET=4000\n" in text
    env.write_text(text.replace("CHAT_WS_CONNECTION_BUDGET=4000", "CHAT_WS_CONNECTION_BUDGET=3000"))
    docs = yaml_docs(_render(tools, copy / "overlays" / "monitoring"))
    rule = _one(docs, "PrometheusRule", "chatstack")
    (alert,) = [
        r
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if r["alert"] == "ChatWsConnectionsOverBudget"
    ]
    assert alert["expr"] == "max by (namespace, pod) (chat_ws_connections) > 3000"
