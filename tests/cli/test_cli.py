"""The command line as a user runs it: `init`, `simulate`, `replay`, `demo`, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path, load_config
from streamfolio.messages import PortfolioStats, Weights

runner = CliRunner()
EXAMPLE = str(example_config_path())


@pytest.fixture(scope="module")
def state_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init") / "state.json"
    result = runner.invoke(app, ["init", "--config", EXAMPLE, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_every_command_has_help() -> None:
    for command in ([], ["init"], ["replay"], ["simulate"], ["demo"]):
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output


def test_init_writes_schema_shaped_state_for_every_portfolio(state_file: Path) -> None:
    state = json.loads(state_file.read_text())
    settings = load_config(EXAMPLE, environ={})
    assert [p["portfolio_id"] for p in state["portfolios"]] == [p.id for p in settings.portfolios]
    for entry, portfolio in zip(state["portfolios"], settings.portfolios, strict=True):
        stats = PortfolioStats.from_record(entry["stats"])  # validates against the schema's rules
        weights = Weights.from_record(entry["weights"])
        assert stats.tickers == portfolio.tickers
        assert stats.count > 100
        assert sum(weights.weights.values()) == pytest.approx(1.0, abs=1e-9)
        assert all(w >= 0 for w in weights.weights.values())
        assert np.all(np.linalg.eigvalsh(stats.covariance_matrix()) > 0)


def test_init_statistics_are_daily_log_returns_scaled_to_the_bar(state_file: Path) -> None:
    from streamfolio.feeds.history import bundled_history_path, read_history

    state = json.loads(state_file.read_text())
    banks = next(p for p in state["portfolios"] if p["portfolio_id"] == "banks")
    tickers = banks["stats"]["tickers"]
    history = read_history(bundled_history_path())
    _, columns, closes = history.closes_wide(tickers)
    assert list(columns) == tickers
    # SEMANTICS §4: a ticker without a close in a bar contributes 0 and its next return spans
    # the gap; that is the same as carrying its last close forward.
    import pandas as pd

    filled = pd.DataFrame(closes).ffill().to_numpy()
    start = int(np.argmax(~np.isnan(filled).any(axis=1)))  # the warm-up bar
    returns = np.diff(np.log(filled[start:]), axis=0)
    settings = load_config(EXAMPLE, environ={})
    portfolio = settings.portfolio("banks")
    factor = settings.exchange.trading_days_per_year / portfolio.periods_per_year_value(
        settings.exchange
    )
    expected_cov = np.cov(returns.T) * factor
    got = PortfolioStats.from_record(banks["stats"]).covariance_matrix()
    np.testing.assert_allclose(got, expected_cov, rtol=1e-9)


def test_init_with_a_bad_history_names_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "time,ticker,price\n2026-01-05T15:30:00+01:00,ATW,700\n2026-01-06T15:30:00+01:00,ATW,-1\n"
    )
    result = runner.invoke(app, ["init", "--config", EXAMPLE, "--history", str(bad)])
    assert result.exit_code == 1  # a malformed input file: a runtime error
    assert f"{bad}:3" in result.output
    assert "price" in result.output


def test_init_with_unknown_tickers_in_history_says_which(tmp_path: Path) -> None:
    small = tmp_path / "small.csv"
    small.write_text(
        "time,ticker,price\n"
        + "".join(f"2026-01-0{d}T15:30:00+01:00,ATW,{700 + d}\n" for d in range(5, 9))
    )
    result = runner.invoke(app, ["init", "--config", EXAMPLE, "--history", str(small)])
    assert result.exit_code == 1
    assert "no history for tickers" in result.output


def test_without_a_config_the_packaged_example_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMFOLIO_CONFIG", raising=False)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    assert '"portfolio_id": "portf1"' in result.output


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["init", "--config", str(missing)])
    assert result.exit_code == 2
    assert "nope.yaml" in result.output


def test_config_error_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "portfolios:\n  - id: p\n    tickers: [ATW, IAM]\n    weights: {ATW: 0.6, IAM: 0.5}\n"
    )
    result = runner.invoke(app, ["init", "--config", str(config)])
    assert result.exit_code == 2
    assert "portfolios[p].weights" in result.output


def test_simulate_then_replay_gives_metrics_and_a_rebalance(
    tmp_path: Path, state_file: Path
) -> None:
    ticks = tmp_path / "ticks.csv"
    result = runner.invoke(
        app, ["simulate", "--config", EXAMPLE, "--out", str(ticks), "--bars", "240", "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "events.jsonl"
    result = runner.invoke(
        app,
        [
            "replay",
            "--config",
            EXAMPLE,
            "--prices",
            str(ticks),
            "--state",
            str(state_file),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = {e["type"] for e in events}
    assert {"stats", "metrics"} <= kinds
    metrics = [e for e in events if e["type"] == "metrics"]
    assert {m["portfolioId"] for m in metrics} == {"portf1", "banks"}
    for event in (e for e in events if e["type"] == "weights"):
        assert sum(event["weights"].values()) == pytest.approx(1.0, abs=1e-9)


def test_replay_is_deterministic_and_csv_has_metrics_rows(tmp_path: Path, state_file: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    runner.invoke(app, ["simulate", "--config", EXAMPLE, "--out", str(ticks), "--bars", "60"])
    outputs = []
    for i in range(2):
        out = tmp_path / f"run{i}.csv"
        result = runner.invoke(
            app,
            [
                "replay",
                "--config",
                EXAMPLE,
                "--prices",
                str(ticks),
                "--state",
                str(state_file),
                "--out",
                str(out),
                "--format",
                "csv",
            ],
        )
        assert result.exit_code == 0, result.output
        outputs.append(out.read_text())
    assert outputs[0] == outputs[1]
    header, *rows = outputs[0].splitlines()
    assert header.startswith("kind,portfolio_id,timestamp,expected_return,risk,sharpe")
    assert any(r.startswith("metrics,") for r in rows)


def test_replay_of_an_unsorted_tick_file_applies_event_time_rules(
    tmp_path: Path, state_file: Path
) -> None:
    ticks = tmp_path / "ticks.csv"
    lines = ["time,ticker,price"]
    # 10:00:30 arrives after 10:01:10; within a 2 s bound it is late (its bar closed already).
    lines += [
        "2026-10-01T10:00:10Z,ATW,700",
        "2026-10-01T10:01:10Z,ATW,701",
        "2026-10-01T10:02:10Z,ATW,702",
        "2026-10-01T10:00:30Z,ATW,650",
    ]
    ticks.write_text("\n".join(lines) + "\n")
    out = tmp_path / "events.jsonl"
    result = runner.invoke(
        app,
        [
            "replay",
            "--config",
            EXAMPLE,
            "--prices",
            str(ticks),
            "--state",
            str(state_file),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    late = [e for e in events if e["type"] == "dead_letter"]
    assert late and all(e["reason"] == "late" for e in late)


def test_demo_runs_offline_and_prints_a_summary() -> None:
    result = runner.invoke(app, ["demo", "--offline", "--bars", "120"])
    assert result.exit_code == 0, result.output
    assert "portf1" in result.output and "banks" in result.output
