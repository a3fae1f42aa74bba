"""The Grafana dashboard and Prometheus alerts use exactly the metric names the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
OBSERVABILITY = ROOT / "deploy" / "observability"
RUNBOOK = ROOT / "docs" / "runbook.md"

METRICS: dict[str, tuple[str, ...]] = {
    # gateway
    "tickertape_runs_submitted_total": ("priority",),
    "tickertape_http_requests_total": ("route", "method", "status"),
    "tickertape_http_request_duration_seconds": ("route",),
    "tickertape_sse_connections": (),
    "tickertape_sse_dropped_total": (),
    # runner
    "tickertape_runs_finished_total": ("status",),
    "tickertape_run_duration_seconds": (),
    "tickertape_step_duration_seconds": ("step",),
    "tickertape_queue_depth": ("queue",),
    "tickertape_queue_lag": ("queue",),
    "tickertape_queue_pending": ("queue",),
    "tickertape_queue_oldest_pending_seconds": ("queue",),
    "tickertape_reclaims_total": (),
    "tickertape_deadletters_total": ("reason",),
    "tickertape_cancel_latency_seconds": (),
    "tickertape_runs_executing": (),
    "tickertape_llm_calls_total": ("model",),
    "tickertape_llm_tokens_total": ("model", "kind"),
    "tickertape_llm_cost_usd_total": ("model",),
    # projector
    "tickertape_projector_events_applied_total": (),
    "tickertape_projector_events_skipped_total": ("reason",),
    "tickertape_projector_batch_size": (),
    "tickertape_projector_lag_entries": (),
    "tickertape_projector_lag_seconds": (),
    "tickertape_retention_actions_total": ("action",),
}
HISTOGRAMS = {
    "tickertape_http_request_duration_seconds",
    "tickertape_run_duration_seconds",
    "tickertape_step_duration_seconds",
    "tickertape_cancel_latency_seconds",
    "tickertape_projector_batch_size",
}
EXTERNAL = {
    # prometheus_client's process collector and kube-state-metrics.
    "process_start_time_seconds": (),
    "kube_pod_container_status_restarts_total": (),
}
TARGET_LABELS = {"pod", "container", "namespace", "job", "instance"}
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "and", "or", "unless", "on",
    "rate", "increase", "deriv", "changes", "histogram_quantile", "le", "bool", "offset",
}  # fmt: skip


def expressions() -> list[str]:
    return dashboard_expressions() + [rule["expr"] for rule in alert_rules()]


def dashboard() -> dict[str, Any]:
    data = json.loads((OBSERVABILITY / "grafana-dashboard.json").read_text())
    assert isinstance(data, dict)
    return data


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for panel in panels() for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load((OBSERVABILITY / "alerts.yaml").read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def strip_promql(expr: str) -> str:
    """The expression without strings, label matchers, ranges and grouping clauses."""
    expr = re.sub(r'"[^"]*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    return re.sub(r"\b(by|without|on)\s*\([^)]*\)", " ", expr)


def metric_names(expr: str) -> set[str]:
    words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", strip_promql(expr)))
    return words - PROMQL_WORDS


def base_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
            return name.removesuffix(suffix)
    return name


def labels_of(name: str) -> set[str]:
    known = {**METRICS, **EXTERNAL}
    extra = {"le"} if name.endswith("_bucket") else set()
    return set(known[base_name(name)]) | extra | TARGET_LABELS


def used_labels(expr: str) -> set[str]:
    clean = re.sub(r'"[^"]*"', '""', expr)
    grouped = re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", clean)
    matchers = re.findall(r"\{([^}]*)\}", clean)
    names = {label.strip() for group in grouped for label in group.split(",")}
    names |= {m.split("=")[0].strip(" !~") for group in matchers for m in group.split(",") if m}
    return names - {""}


def test_files_parse_and_have_content() -> None:
    assert len(panels()) >= 20
    assert len(alert_rules()) >= 8
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("expr", expressions())
def test_every_metric_is_one_the_services_export(expr: str) -> None:
    names = metric_names(expr)
    assert names, expr
    allowed = set(METRICS) | set(EXTERNAL)
    unknown = {name for name in names if base_name(name) not in allowed}
    assert not unknown, f"{unknown} in {expr}"


@pytest.mark.parametrize("expr", expressions())
def test_every_label_belongs_to_a_metric_of_the_expression(expr: str) -> None:
    available = set().union(*(labels_of(name) for name in metric_names(expr)))
    assert used_labels(expr) <= available, expr


def test_every_service_has_a_panel() -> None:
    used = {base_name(name) for expr in dashboard_expressions() for name in metric_names(expr)}
    assert set(METRICS) <= used, f"metrics without a panel: {set(METRICS) - used}"


def test_brackets_balance() -> None:
    for expr in expressions():
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr


def test_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert {
        "TickertapeQueueLagGrowing",
        "TickertapeDeadLetters",
        "TickertapeProjectorLag",
        "TickertapeRunnerCrashLoop",
        "TickertapeHighErrorRate",
    } <= names


def anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors."""
    headings = re.findall(r"^#+\s+(.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_alerts_are_actionable() -> None:
    runbook = anchors(RUNBOOK.read_text())
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
        page, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert page == "docs/runbook.md" and anchor in runbook, rule["alert"]


def test_checker_rejects_a_wrong_name() -> None:
    """The name check would catch a typo (so the passing tests mean something)."""
    expr = "sum(rate(tickertape_run_submitted_total[5m]))"
    assert metric_names(expr) == {"tickertape_run_submitted_total"}
    assert base_name("tickertape_run_submitted_total") not in METRICS
    assert used_labels('sum by (model) (x{kind="a"})') == {"model", "kind"}
