"""What the Grafana tests read: deploy/grafana's dashboards and provisioning files, every query
of every panel, and Grafana's SQL macros and variables substituted as Grafana would."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
STORE_UID = "streamfolio-store"
PROMETHEUS_UID = "streamfolio-prometheus"


@dataclass(frozen=True)
class Query:
    """One query of a dashboard: where it is (dashboard, panel title or variable/annotation
    name), which datasource it asks, and its text (SQL or PromQL)."""

    dashboard: str
    where: str
    datasource: str
    text: str

    def __str__(self) -> str:
        return f"{self.dashboard}: {self.where}"


def dashboards() -> dict[str, dict[str, Any]]:
    """Every dashboard JSON, by file name."""
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARDS.glob("*.json"))
    }


def yaml_files() -> dict[Path, Any]:
    """Every YAML file of deploy/grafana (provisioning, the Prometheus example), parsed."""
    return {
        path: yaml.safe_load(path.read_text(encoding="utf-8"))
        for path in sorted([*GRAFANA.rglob("*.yaml"), *GRAFANA.rglob("*.yml")])
    }


def _uid(datasource: Any) -> str:
    return str(datasource["uid"]) if isinstance(datasource, dict) else str(datasource)


def queries() -> Iterator[Query]:
    """Every query: panels' targets, template variables, annotations."""
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                source = _uid(target.get("datasource", panel["datasource"]))
                text = target.get("rawSql") or target.get("expr")
                yield Query(name, f"panel {panel['title']!r} {target['refId']}", source, text)
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                yield Query(
                    name, f"variable ${variable['name']}", _uid(variable["datasource"]),
                    variable["query"],
                )  # fmt: skip
        for annotation in board["annotations"]["list"]:
            if "target" in annotation:
                yield Query(
                    name, f"annotation {annotation['name']!r}", _uid(annotation["datasource"]),
                    annotation["target"]["rawSql"],
                )  # fmt: skip


_TIME_FILTER = re.compile(r"\$__timeFilter\(([^)]+)\)")


def substitute(sql: str, *, portfolio: str, start: str, end: str) -> str:
    """``sql`` as Grafana sends it to PostgreSQL: ``$__timeFilter(column)`` becomes a
    ``BETWEEN`` of the dashboard's time range, ``$portfolio`` the chosen portfolio.

    >>> substitute("WHERE p = '$portfolio' AND $__timeFilter(t)", portfolio="a",
    ...            start="2026-10-01T00:00:00Z", end="2026-10-02T00:00:00Z")
    "WHERE p = 'a' AND t BETWEEN '2026-10-01T00:00:00Z' AND '2026-10-02T00:00:00Z'"
    """
    sql = _TIME_FILTER.sub(lambda m: f"{m.group(1)} BETWEEN '{start}' AND '{end}'", sql)
    return sql.replace("${portfolio}", portfolio).replace("$portfolio", portfolio)
