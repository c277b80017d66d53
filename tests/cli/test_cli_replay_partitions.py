"""`streamfolio replay` over a tick file with a `partition` column (docs/semantics.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path

runner = CliRunner()
EXAMPLE = str(example_config_path())


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "state.json"
    result = runner.invoke(app, ["init", "--config", EXAMPLE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def ticks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ticks") / "ticks.csv"
    result = runner.invoke(
        app, ["simulate", "--config", EXAMPLE, "--out", str(out), "--bars", "40", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    return out


def replay(prices: Path, state_file: Path, out: Path) -> Any:
    return runner.invoke(
        app,
        [
            "replay",
            "--config",
            EXAMPLE,
            "--prices",
            str(prices),
            "--state",
            str(state_file),
            "--out",
            str(out),
            "--no-rebalance",
        ],
    )


def per_portfolio(path: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["type"] in ("stats", "metrics"):
            out.setdefault(event["key"], []).append(event)
    return out


def test_a_file_read_partition_by_partition_gives_each_portfolio_the_same_output(
    tmp_path: Path, ticks: Path, state_file: Path
) -> None:
    header, *rows = ticks.read_text().splitlines()
    tickers = sorted({row.split(",")[1] for row in rows})
    # Keyed by ticker, as a feed does; then every row of partition 1 before any of partition 0.
    partition = {t: i % 2 for i, t in enumerate(tickers)}
    keyed = [f"{row},{partition[row.split(',')[1]]}" for row in rows]
    reordered = [r for r in keyed if r.endswith(",1")] + [r for r in keyed if r.endswith(",0")]
    partitioned = tmp_path / "partitioned.csv"
    partitioned.write_text("\n".join([f"{header},partition", *reordered]) + "\n")

    plain_out, partitioned_out = tmp_path / "plain.jsonl", tmp_path / "partitioned.jsonl"
    result = replay(ticks, state_file, plain_out)
    assert result.exit_code == 0, result.output
    result = replay(partitioned, state_file, partitioned_out)
    assert result.exit_code == 0, result.output

    expected = per_portfolio(plain_out)
    assert sum(len(v) for v in expected.values()) > 20
    assert per_portfolio(partitioned_out) == expected
    # Read as one partition, the same reordering would make most of partition 0 late.
    single = tmp_path / "single.csv"
    single.write_text("\n".join([header, *(r.rsplit(",", 1)[0] for r in reordered)]) + "\n")
    result = replay(single, state_file, tmp_path / "single.jsonl")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in (tmp_path / "single.jsonl").read_text().splitlines()]
    assert any(e["type"] == "dead_letter" and e["reason"] == "late" for e in events)


def test_a_bad_partition_or_row_names_the_file_and_line(tmp_path: Path, state_file: Path) -> None:
    cases = {
        "2026-10-01T10:00:10Z,ATW,700,-1": "bad partition '-1'",
        "2026-10-01T10:00:10Z,ATW,700,x": "bad partition 'x'",
        "2026-10-01T10:00:10Z,ATW,700": "expected 4 fields, got 3",
        "2026-10-01T10:00:10Z,NOPE,700,1": "unknown ticker 'NOPE'",
        "yesterday,ATW,700,1": "bad time 'yesterday'",
    }
    for bad, message in cases.items():
        prices = tmp_path / "ticks.csv"
        prices.write_text(f"time,ticker,price,partition\n2026-10-01T10:00:00Z,ATW,699,0\n\n{bad}\n")
        result = replay(prices, state_file, tmp_path / "out.jsonl")
        assert result.exit_code != 0
        assert message in result.output, result.output
        assert f"{prices}:4" in result.output, result.output
