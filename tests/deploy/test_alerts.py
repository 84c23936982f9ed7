"""The Prometheus alerting rules parse, and ask only for metrics and labels the services export.

A rule on a misspelt metric or label never fires and nobody notices; promql-parser (the
Prometheus grammar) checks each expression, and the metrics registered by the code say which
names and labels exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import Counter, Gauge, Histogram

import promo_libs.metrics
import promo_libs.relay
import sync_consumer.adapters.metrics
from tests.deploy.deploy_support import yaml_module

ALERTS = Path(__file__).parents[2] / "deploy/monitoring/alerts.yaml"
METRIC_MODULES = (promo_libs.metrics, promo_libs.relay, sync_consumer.adapters.metrics)
# Labels Prometheus adds to every series it scrapes from a pod.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container"})
DURATION = re.compile(r"^\d+[smhd]$")


def exported_series() -> dict[str, frozenset[str]]:
    """Sample name -> its labels, for every metric the services register."""
    series: dict[str, frozenset[str]] = {}
    for module in METRIC_MODULES:
        for metric in vars(module).values():
            if not isinstance(metric, Counter | Gauge | Histogram):
                continue
            (family,) = metric.describe()
            # prometheus_client keeps the label names private; they are part of the contract here.
            labels = frozenset(metric._labelnames)
            if isinstance(metric, Counter):
                series[f"{family.name}_total"] = labels
            elif isinstance(metric, Histogram):
                series[f"{family.name}_bucket"] = labels | {"le"}
                series[f"{family.name}_sum"] = labels
                series[f"{family.name}_count"] = labels
            else:
                series[family.name] = labels
    return series


def rules() -> list[dict[str, Any]]:
    document = yaml_module().safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def selectors(node: Any) -> list[Any]:
    """Every VectorSelector in an expression tree."""
    if node is None:
        return []
    if isinstance(node, promql_parser.VectorSelector):
        return [node]
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    found = []
    for child in ("expr", "lhs", "rhs", "param"):
        found += selectors(getattr(node, child, None))
    for argument in getattr(node, "args", None) or []:
        found += selectors(argument)
    return found


def grouping_labels(node: Any) -> set[str]:
    labels: set[str] = set()
    modifier = getattr(node, "modifier", None)
    if isinstance(node, promql_parser.AggregateExpr) and modifier is not None:
        labels |= set(modifier.labels)
    for child in ("expr", "lhs", "rhs"):
        value = getattr(node, child, None)
        if value is not None:
            labels |= grouping_labels(value)
    for argument in getattr(node, "args", None) or []:
        labels |= grouping_labels(argument)
    return labels


def test_the_rule_file_is_well_formed() -> None:
    names = [rule["alert"] for rule in rules()]
    assert names and len(names) == len(set(names))
    for rule in rules():
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert DURATION.match(rule.get("for", "0s")), rule["alert"]


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_each_expression_asks_for_exported_metrics_and_labels(rule: dict[str, Any]) -> None:
    exported = exported_series()
    tree = promql_parser.parse(rule["expr"])  # ValueError when it is not PromQL
    found = selectors(tree)
    assert found, "an alert on no metric"
    available = set(TARGET_LABELS)
    for selector in found:
        assert selector.name in exported, f"{selector.name} is not exported by any service"
        labels = exported[selector.name]
        available |= labels
        for matcher in selector.matchers.matchers:
            assert matcher.name in labels | TARGET_LABELS, f"{selector.name} has no {matcher.name}"
    assert grouping_labels(tree) <= available
    templated = re.findall(r"\$labels\.(\w+)", str(rule["annotations"]))
    assert set(templated) <= available, "an annotation names a label the alert does not carry"


def test_a_misspelt_metric_would_be_caught() -> None:
    tree = promql_parser.parse("rate(grpc_server_handeld_total[5m]) > 0")
    assert [s.name for s in selectors(tree)] == ["grpc_server_handeld_total"]
    assert "grpc_server_handeld_total" not in exported_series()
