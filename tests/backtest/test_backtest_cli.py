"""``streamfolio backtest`` on the bundled history: the five comparisons, JSON, the HTML page,
a sweep on two workers, and the options' errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path

runner = CliRunner()
CONFIG = str(example_config_path())
STRATEGIES = ["policy", "buy_and_hold", "monthly", "equal_weight", "masi"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], str, str]:
    out = tmp_path_factory.mktemp("backtest") / "report.html"
    result = runner.invoke(app, ["backtest", "--config", CONFIG, "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out.read_text(encoding="utf-8"), result.stderr


def test_the_five_comparisons_for_every_portfolio(
    report: tuple[dict[str, object], str, str],
) -> None:
    figures, _, progress = report
    portfolios = figures["portfolios"]
    assert isinstance(portfolios, list)
    assert [p["portfolio_id"] for p in portfolios] == ["portf1", "banks"]
    for portfolio in portfolios:
        rows = {s["strategy"]: s for s in portfolio["strategies"]}
        assert list(rows) == STRATEGIES
        for row in rows.values():
            for name in ("total_return", "annualised_return", "volatility", "sharpe", "sortino"):
                assert isinstance(row[name], float), (row["strategy"], name)
            assert row["max_drawdown"] <= 0.0
            assert row["costs"] >= 0.0 and row["turnover"] >= 0.0
        assert rows["buy_and_hold"]["rebalances"] == 0 and rows["buy_and_hold"]["costs"] == 0.0
        assert rows["monthly"]["rebalances"] > 0 and rows["monthly"]["costs"] > 0.0
        # The bundled MASI starts on 2025-12-01, after the default split.
        assert rows["masi"]["first"] == "2025-12-01" and "only" in rows["masi"]["note"]
    assert figures["costs"]["rate_per_side"] == pytest.approx(0.0099)
    assert "initial state from the" in progress and "backtest report" in progress


def test_the_report_page_is_self_contained(report: tuple[dict[str, object], str, str]) -> None:
    _, page, _ = report
    assert page.count('src="data:image/png;base64,') == 4  # value and drawdowns, two portfolios
    assert "MASI index" in page and "buy and hold" in page and "0.9900% per side" in page
    assert not re.search(r"""(src|href)=["']https?:""", page)


def test_a_sweep_on_two_workers_and_a_table(tmp_path: Path) -> None:
    page = tmp_path / "sweep.html"
    result = runner.invoke(
        app,
        [
            "backtest",
            "--out",
            str(page),
            "--config",
            CONFIG,
            "--portfolio",
            "banks",
            "--start",
            "2025-06-02",
            "--costs",
            "25bp",
            "--sweep",
            "cooldown_days=0,20",
            "--sweep",
            "max_turnover=0.1,0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "banks: 2025-05-30 to 2026-09-30" in text
    assert "banks sweep, best Sharpe first:" in text
    assert len(re.findall(r"^\s+(0\.0|20\.0)\s+0\.[15]\s", text, flags=re.MULTILINE)) == 4
    assert "sweep: 4 backtests on 2 worker(s)" in result.stderr
    assert "<h3>Sweep</h3>" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--costs", "free"], "--costs 'free'"),
        (["--sweep", "speed=1"], "unknown parameter 'speed'"),
        (["--objective", "efficient_risk"], "needs target_volatility"),
        (["--portfolio", "nope"], "no portfolio 'nope'"),
        (["--split", "1.5"], "--split 1.5"),
    ],
)
def test_bad_options_are_reported(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["backtest", "--config", CONFIG, *args])
    assert result.exit_code != 0
    assert message in result.output, result.output
