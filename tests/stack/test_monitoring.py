"""Every `chat_*` metric the alert rules name (k8s/components/monitoring) is on the running
stack's /metrics, so no alert watches a series that never exists.

After one message into a room with a socket on every ws replica: on each replica, every
metric of the rules is declared (its `# TYPE` line), and has samples, but for the labelled
counters whose series appear only with their first failure (listed in DECLARED_ONLY;
prometheus_client prints the TYPE line of a labelled metric before any sample, in a
single process such as daphne). Histograms are checked by their `_bucket` and `_count`
series. On web (gunicorn, multiprocess: a metric appears there only once a worker wrote
it), the series the HTTP alerts read have samples after a request.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from localstack.stack import http_get

RULES = Path(__file__).resolve().parents[2] / "k8s" / "components" / "monitoring"
# Labelled counters with no series until something fails (a layer call, a failover).
DECLARED_ONLY = {"chat_layer_errors_total", "chat_redis_failovers_seen_total"}
# What the HTTP side of the rules reads from gunicorn.
WEB = {"chat_http_requests_total", "chat_dependency_up"}


def rule_metrics() -> set[str]:
    """The `chat_*` names in the PrometheusRule (expressions and annotations alike)."""
    text = (RULES / "prometheus-rules.yaml").read_text()
    return set(re.findall(r"\bchat_[a-z0-9_]+\b", text))


def scrape(url: str) -> tuple[dict[str, str], dict[str, list]]:
    """/metrics -> ({declared name: type}, {sample name: [samples]})."""
    status, body = http_get(url + "/metrics")
    assert status == 200, body[:200]
    text = body.decode()
    types = dict(re.findall(r"(?m)^# TYPE (\S+) (\S+)$", text))
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return types, samples


def declared(types: dict[str, str], name: str) -> str | None:
    """The type a scrape declares for a rule's series name (histograms by their base)."""
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    return types.get(name) or (types.get(base) if base != name else None)


def test_the_rules_name_the_metrics_this_test_expects():
    names = rule_metrics()
    assert {"chat_layer_dropped_total", "chat_fanout_seconds_bucket", "chat_dependency_up"} <= names
    assert names >= DECLARED_ONLY | WEB


async def test_every_metric_of_the_alerts_is_scraped(stack, tokens, clients, room):
    names = rule_metrics()
    replicas = stack.serving()
    sockets = [
        await clients.open(stack.ws_url(room, replica=r.index), tokens[f"user{i + 1}"])
        for i, r in enumerate(replicas)
    ]
    await sockets[0].say("for the metrics")
    for client in sockets:
        await client.until(lambda c=client: len(c.messages) == 1, what="the message")
    # The readiness checks set chat_dependency_up; a page counts an HTTP request.
    for url in stack.process_urls().values():
        assert http_get(url + "/readyz")[0] == 200
    assert http_get(stack.web_url + "/chat/")[0] in (200, 302)

    for replica in replicas:
        types, samples = scrape(replica.url)
        for name in sorted(names):
            kind = declared(types, name)
            assert kind, f"{replica.name}: {name} is not on /metrics"
            if name.endswith("_bucket"):
                assert kind == "histogram", name
                count = samples[name.removesuffix("_bucket") + "_count"]
                assert sum(s.value for s in count) >= 1, f"{replica.name}: {name} has no sample"
                assert any(s.labels.get("le") == "+Inf" for s in samples[name]), name
            elif name not in DECLARED_ONLY:
                assert samples.get(name), f"{replica.name}: {name} has no series"
        # The labels the rules aggregate or match on are there.
        assert {s.labels["dependency"] for s in samples["chat_dependency_up"]} == {
            "database",
            "redis",
        }
        assert {s.labels["reason"] for s in samples["chat_ws_admission_refusals_total"]} >= {
            "connections"
        }

    types, samples = scrape(stack.web_url)
    for name in WEB:
        assert samples.get(name), f"web: {name} has no series"
    assert all(
        re.fullmatch(r"[1-5][0-9][0-9]", s.labels["status"])
        for s in samples["chat_http_requests_total"]
    )
