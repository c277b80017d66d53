"""deploy/grafana: the dashboards and provisioning load, every panel asks a provisioned
datasource, and every Prometheus query names metrics the components export. That every SQL
query runs against a real store is tests/integration/test_grafana_queries.py."""

from __future__ import annotations

import re

import yamllint.config
import yamllint.linter
from grafanakit import (
    GRAFANA,
    PROMETHEUS_UID,
    STORE_UID,
    dashboards,
    queries,
    substitute,
    yaml_files,
)

from streamfolio.observability.metrics import COMPONENTS, registry

YAMLLINT = """
extends: default
rules:
  line-length: {max: 100}
  document-start: disable
  comments: {min-spaces-from-content: 1}
  braces: {min-spaces-inside: 0, max-spaces-inside: 1}
"""
OURS = re.compile(r"(?<![a-z_])streamfolio_[a-z_]+")
# The job's metrics come from Flink's reporter: its name for our counters in group streamfolio.
FLINK_OURS = re.compile(r"flink_taskmanager_job_task_operator_streamfolio_([a-z_]+)")
FLINK_COUNTERS = {
    "ticks_read", "ticks_counted", "ticks_dead_lettered", "heartbeats_read", "bars_closed",
    "portfolio_updates", "watermark_lag_ms",
}  # fmt: skip


def test_every_file_loads_and_passes_yamllint() -> None:
    assert len(dashboards()) == 2
    files = yaml_files()
    assert len(files) == 3
    config = yamllint.config.YamlLintConfig(YAMLLINT)
    problems = [
        f"{path.relative_to(GRAFANA)}:{p.line}: {p.message}"
        for path in files
        for p in yamllint.linter.run(path.read_text(encoding="utf-8"), config)
    ]
    assert problems == []


def test_the_datasources_are_provisioned_with_the_uids_the_panels_ask_for() -> None:
    (provisioned,) = [doc for path, doc in yaml_files().items() if "datasources" in doc]
    uids = {source["uid"]: source["type"] for source in provisioned["datasources"]}
    assert uids == {STORE_UID: "grafana-postgresql-datasource", PROMETHEUS_UID: "prometheus"}
    (store,) = [s for s in provisioned["datasources"] if s["uid"] == STORE_UID]
    assert store["secureJsonData"] == {"password": "${STREAMFOLIO_PG_PASSWORD}"}  # no secret
    for query in queries():
        assert query.datasource in uids, str(query)
        assert query.text.strip(), str(query)


def test_the_dashboards_have_unique_panels_in_a_grid() -> None:
    for name, board in dashboards().items():
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), name
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, f"{name}: {panel['title']}"


def test_the_store_dashboard_shows_what_the_issue_asks_for() -> None:
    board = dashboards()["streamfolio-portfolios.json"]
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Sharpe ratio", "Expected return", "Risk", "Weights"} <= titles
    assert any("rebalance_events" in a.get("target", {}).get("rawSql", "")
               for a in board["annotations"]["list"])  # fmt: skip
    assert [v["name"] for v in board["templating"]["list"]] == ["portfolio"]


def _exported() -> set[str]:
    names = set()
    for component in COMPONENTS:
        for family in registry(component).collect():
            names.update(sample.name for sample in family.samples)
            if family.type == "histogram":
                names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
            if family.type == "counter":
                names.add(f"{family.name}_total")
    return names


def test_every_prometheus_query_names_exported_metrics() -> None:
    exported = _exported()
    for query in queries():
        if query.datasource != PROMETHEUS_UID:
            continue
        ours = set(OURS.findall(query.text))
        assert ours <= exported, f"{query}: {sorted(ours - exported)}"
        for counter in FLINK_OURS.findall(query.text):
            assert counter in FLINK_COUNTERS, f"{query}: {counter}"


def test_every_sql_query_is_left_with_no_grafana_syntax_once_substituted() -> None:
    for query in queries():
        if query.datasource == STORE_UID:
            sql = substitute(query.text, portfolio="banks", start="2026-10-01", end="2026-10-02")
            assert "$" not in sql, str(query)
