"""Monitoring and cost controls as code, read strictly by the API's own message types.

gcloud does not look inside an alert policy, a dashboard or a logs-based metric before it asks for
credentials (a misspelled field reaches the same credentials error as a correct one), so each file
deploy/monitoring.sh renders is parsed here by Google's client libraries with unknown fields refused:
google-cloud-monitoring's AlertPolicy, google-cloud-monitoring-dashboards' Dashboard,
google-cloud-logging's LogMetric, google-cloud-billing-budgets' Budget. Every metric a file names
must be one Cloud Run defines or one of the logs-based metrics, with only the labels those have.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.harness import REPO

pytest.importorskip("google.cloud.monitoring_v3", reason="the dev extra's google-cloud-monitoring")
from google.cloud import monitoring_dashboard_v1, monitoring_v3  # noqa: E402
from google.cloud.billing import budgets_v1  # noqa: E402
from google.cloud.logging_v2.types import LogMetric  # noqa: E402

RENDER_ARGS = [
    "--project",
    "acme-prod",
    "--service",
    "cutouts",
    "--service-cpu",
    "cutouts-cpu",
    "--notification-channel",
    "projects/acme-prod/notificationChannels/123",
    "--business-hours",
    "7-17",
]
TYPES = {"alert": monitoring_v3.AlertPolicy, "dashboard": monitoring_dashboard_v1.Dashboard, "metric": LogMetric}

# Cloud Run's metrics and the metric labels these files may use (Google Cloud metrics, "run":
# cloud.google.com/monitoring/api/metrics_gcp_p_z#gcp-run; the GPU one is listed on
# cloud.google.com/run/docs/monitoring as "Container GPU utilization").
CLOUD_RUN_METRICS = {
    "run.googleapis.com/request_count": {"response_code", "response_code_class"},
    "run.googleapis.com/request_latencies": {"response_code", "response_code_class"},
    "run.googleapis.com/container/instance_count": {"state"},
    "run.googleapis.com/container/startup_latencies": set(),
    "run.googleapis.com/container/billable_instance_time": set(),
    "run.googleapis.com/container/gpu/utilizations": set(),
}
# The monitored resource of a Cloud Run service's revision, and its labels.
RESOURCE_TYPE = "cloud_run_revision"
RESOURCE_LABELS = {"project_id", "service_name", "revision_name", "location", "configuration_name"}
# AlertPolicy's aggregation limit, in the client library's own words (monitoring_v3.types.common):
# "The maximum value of the alignment_period is 104 weeks (2 years) for charts, and 90,000 seconds
# (25 hours) for alerting policies."
ALERT_MAX_ALIGNMENT_S = 90_000


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("monitoring")
    result = subprocess.run(
        [str(REPO / "deploy" / "monitoring.sh"), *RENDER_ARGS, "--render-only", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return {path.name: path.read_text() for path in sorted(out.glob("*.json"))}


def parse(name: str, text: str):
    return TYPES[Path(name).stem.split("-")[0]].from_json(text, ignore_unknown_fields=False)


def logs_metrics(rendered: dict[str, str]) -> dict[str, set[str]]:
    """The logs-based metrics the repository defines: their metric type, and their labels."""
    metrics = {}
    for name, text in rendered.items():
        if name.startswith("metric-"):
            metric = parse(name, text)
            metrics[f"logging.googleapis.com/user/{metric.name}"] = {d.key for d in metric.metric_descriptor.labels}
    return metrics


def filter_problems(text: str, known: dict[str, set[str]]) -> list[str]:
    """What a Monitoring filter, or a group-by field, names that the metric it reads does not have."""
    problems = []
    metrics = re.findall(r'metric\.type\s*=\s*"([^"]+)"', text)
    for metric in metrics:
        if metric not in known:
            problems.append(f"unknown metric {metric}")
    for resource in re.findall(r'resource\.type\s*=\s*"([^"]+)"', text):
        if resource != RESOURCE_TYPE:
            problems.append(f"unknown resource type {resource}")
    for label in re.findall(r"resource\.labels?\.(\w+)", text):
        if label not in RESOURCE_LABELS:
            problems.append(f"{RESOURCE_TYPE} has no label {label}")
    allowed = set().union(*(known.get(m, set()) for m in metrics)) if metrics else set()
    for label in re.findall(r"metric\.labels?\.(\w+)", text):
        if label not in allowed:
            problems.append(f"{metrics} have no metric label {label}")
    return problems


def promql_problems(query: str, known: dict[str, set[str]]) -> list[str]:
    """The same for a PromQL query: Cloud Monitoring's names (first '/' -> ':', others and '.' -> '_')."""
    by_prom_name = {}
    for metric, labels in known.items():
        domain, _, path = metric.partition("/")
        by_prom_name[domain.replace(".", "_") + ":" + path.replace("/", "_").replace(".", "_")] = labels
    problems = []
    for name, selector in re.findall(r"([a-z_]+:[a-z_]+)\{([^}]*)\}", query):
        # A distribution reads as a Prometheus histogram: NAME_bucket, NAME_count, NAME_sum.
        base = name if name in by_prom_name else re.sub(r"_(bucket|count|sum)$", "", name)
        if base not in by_prom_name:
            problems.append(f"unknown metric {name}")
            continue
        for label, value in re.findall(r'(\w+)\s*=~?\s*"([^"]*)"', selector):
            if label == "monitored_resource":
                problems += [] if value == RESOURCE_TYPE else [f"unknown resource type {value}"]
            elif label not in RESOURCE_LABELS | by_prom_name[base] | {"le"}:
                problems.append(f"{name} has no label {label}")
    return problems


# A filter's key -> the keys of its aggregations (the first present one counts).
FILTER_KEYS = {"filter": ("aggregations", "aggregation"), "denominatorFilter": ("denominatorAggregations",)}


def group_by(aggregations) -> str:
    aggregations = aggregations if isinstance(aggregations, list) else [aggregations or {}]
    return " ".join(field for a in aggregations for field in a.get("groupByFields", []))


def filters_of(value: dict) -> list[tuple[str, str]]:
    """The filters of one object, each with its aggregations' group-by fields."""
    found = []
    for key, aggregation_keys in FILTER_KEYS.items():
        text = value.get(key)
        if isinstance(text, str) and text:
            aggregations = next((value[k] for k in aggregation_keys if k in value), None)
            found.append(("filter", text + " " + group_by(aggregations)))
    return found


def every_query(message) -> list[tuple[str, str]]:
    """(kind, text) of every filter (with its aggregations' group-by fields) and PromQL query in a parsed file."""
    found = []

    def walk(value):
        if isinstance(value, dict):
            found.extend(filters_of(value))
            for key, item in value.items():
                if key in ("query", "prometheusQuery") and isinstance(item, str):
                    found.append(("promql", item))
                elif key not in FILTER_KEYS:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(type(message).to_json(message)))
    return found


def test_every_file_parses_strictly_as_its_api_type(rendered):
    assert sorted(rendered) == [
        "alert-cold-starts.json",
        "alert-errors.json",
        "alert-gpu-not-ready.json",
        "alert-latency-p90.json",
        "alert-latency.json",
        "dashboard.json",
        "metric-cold-starts.json",
        "metric-startup-phases.json",
    ]
    for name, text in rendered.items():
        parse(name, text)
        assert "${SERVICE" not in text, name
        assert "${NOTIFICATION" not in text, name
        assert "${BUSINESS" not in text, name


def test_every_metric_and_label_is_one_its_metric_has(rendered):
    known = {**CLOUD_RUN_METRICS, **logs_metrics(rendered)}
    checked = {}
    for name, text in rendered.items():
        if name.startswith("metric-"):
            continue
        for kind, query in every_query(parse(name, text)):
            problems = promql_problems(query, known) if kind == "promql" else filter_problems(query, known)
            assert not problems, f"{name}: {query}: {problems}"
            checked[name] = checked.get(name, 0) + 1
    # Every query was found (the dashboard's 15 series among them).
    assert checked == {
        "alert-cold-starts.json": 1,
        "alert-errors.json": 2,
        "alert-gpu-not-ready.json": 1,
        "alert-latency-p90.json": 1,
        "alert-latency.json": 2,
        "dashboard.json": 15,
    }, checked


def test_planted_mistakes_are_refused(rendered):
    policy = rendered["alert-latency.json"]
    with pytest.raises(Exception, match="conditonThreshold"):
        parse("alert-latency.json", policy.replace('"conditionThreshold"', '"conditonThreshold"'))
    with pytest.raises(Exception, match="legendTemplte"):
        parse("dashboard.json", rendered["dashboard.json"].replace('"legendTemplate"', '"legendTemplte"', 1))
    with pytest.raises(Exception, match="valueExtracter"):
        parse(
            "metric-cold-starts.json",
            rendered["metric-startup-phases.json"].replace("valueExtractor", "valueExtracter"),
        )
    known = {**CLOUD_RUN_METRICS, **logs_metrics(rendered)}
    wrong_metric = 'resource.type = "cloud_run_revision" AND metric.type = "run.googleapis.com/request_latency"'
    assert filter_problems(wrong_metric, known) == ["unknown metric run.googleapis.com/request_latency"]
    wrong_label = 'metric.type = "run.googleapis.com/request_count" AND metric.labels.status = "500"'
    assert "have no metric label status" in filter_problems(wrong_label, known)[0]
    wrong_prom = 'sum(run_googleapis_com:container_instance_count{service="x"})'
    assert promql_problems(wrong_prom, known) == ["run_googleapis_com:container_instance_count has no label service"]


def test_alert_policies_hold_the_plans_targets(rendered):
    policies = {name: parse(name, text) for name, text in rendered.items() if name.startswith("alert-")}
    for name, policy in policies.items():
        assert list(policy.notification_channels) == ["projects/acme-prod/notificationChannels/123"], name
        for condition in policy.conditions:
            for aggregation in list(condition.condition_threshold.aggregations):
                assert aggregation.alignment_period.total_seconds() <= ALERT_MAX_ALIGNMENT_S, name
    latency = {c.display_name[:3]: c.condition_threshold for c in policies["alert-latency.json"].conditions}
    aligner = monitoring_v3.Aggregation.Aligner
    assert latency["P50"].threshold_value == 5000
    assert latency["P50"].aggregations[0].per_series_aligner == aligner.ALIGN_PERCENTILE_50
    assert latency["P99"].threshold_value == 25000
    assert latency["P99"].aggregations[0].per_series_aligner == aligner.ALIGN_PERCENTILE_99
    p90 = policies["alert-latency-p90.json"].conditions[0].condition_prometheus_query_language.query
    assert p90.startswith("histogram_quantile(0.90,")
    assert p90.endswith("> 10000")  # ms, Cloud Run's unit
    errors = policies["alert-errors.json"].conditions[0].condition_threshold
    assert errors.threshold_value == 0.001
    assert 'response_code_class = "5xx"' in errors.filter
    assert "response_code_class" not in errors.denominator_filter  # every request is the denominator
    cold = policies["alert-cold-starts.json"].conditions[0].condition_threshold
    assert cold.threshold_value == 5
    assert cold.aggregations[0].alignment_period.total_seconds() == 86_400
    business = policies["alert-gpu-not-ready.json"].conditions[0].condition_prometheus_query_language.query
    assert 'service_name="cutouts"' in business
    assert "hour() >= 7 and hour() < 17" in business


def test_logs_metrics_read_the_servers_own_log_lines(rendered):
    """The server's real JSON lines carry what each logs-based metric's filter and extractors name."""
    code = (
        "from serving.logs import log\n"
        "log('startup phase', phase='load', seconds=0.65, worker=0)\n"
        "log('ready', worker=0, pid=1, startup_seconds=3.2, backend='onnxruntime', device='cpu')\n"
    )
    result = subprocess.run(["python", "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    lines = {line["message"]: line for line in map(json.loads, result.stdout.splitlines())}
    for name in ("metric-cold-starts.json", "metric-startup-phases.json"):
        metric = parse(name, rendered[name])
        (message,) = re.findall(r'jsonPayload\.message="([^"]+)"', metric.filter)
        line = lines[message]
        for extractor in [metric.value_extractor, *metric.label_extractors.values()]:
            if extractor:
                field = re.fullmatch(r"EXTRACT\(jsonPayload\.(\w+)\)", extractor).group(1)
                assert field in line, (name, field, line)


def budget(*args: str) -> subprocess.CompletedProcess:
    command = [
        str(REPO / "deploy" / "budget.sh"),
        "--billing-account",
        "01ABCD-23EF45-6789AB",
        "--project",
        "acme-prod",
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60)


def test_budget_is_a_monthly_budget_paced_at_the_daily_limit():
    default = budgets_v1.Budget.from_json(budget("--budget-json").stdout, ignore_unknown_fields=False)
    assert default.amount.specified_amount.units == 3100  # $100 a day x 31 days
    assert default.budget_filter.calendar_period == budgets_v1.CalendarPeriod.MONTH
    forecast = [r for r in default.threshold_rules if r.spend_basis == budgets_v1.ThresholdRule.Basis.FORECASTED_SPEND]
    assert [r.threshold_percent for r in forecast] == [1.0]
    channel = "projects/acme-prod/notificationChannels/42"
    fifty = budgets_v1.Budget.from_json(
        budget("--budget-json", "--daily-usd", "50", "--notification-channel", channel).stdout,
        ignore_unknown_fields=False,
    )
    assert fifty.amount.specified_amount.units == 1550
    assert list(fifty.notifications_rule.monitoring_notification_channels) == [channel]
    refused = budget("--daily-usd", "1e9")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --daily-usd")
