"""``streamfolio report``: a self-contained HTML page, and its errors; and the two commands."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from streamfolio.config import example_config_path
from streamfolio.messages import PortfolioMetrics, RebalanceEvent, Weights
from streamfolio.store.cli import register
from streamfolio.store.report import ReportError, load_report, render_report, write_report
from streamfolio.store.schema import open_store
from streamfolio.store.writer import StoreWriter

T0 = 1_790_845_200_000  # 2026-10-01T09:00:00Z (10:00 in Casablanca)
MINUTE = 60_000
IMAGE = re.compile(r'<img alt="([^"]*)" src="data:(image/[a-z+]+);base64,([A-Za-z0-9+/=]+)">')


def _event(t: int, decision: str, reason: str) -> RebalanceEvent:
    return RebalanceEvent(
        "banks", t, reason, decision, {"ATW": 0.5, "BCP": 0.5}, {"ATW": 0.62, "BCP": 0.38},
        0.31, 0.72, 0.11, 0.18, 0.24, "optimal",
    )  # fmt: skip


def _history(threshold: float | None = 0.5) -> list[object]:
    sharpe = [0.8 - 0.02 * i if i < 30 else 0.7 for i in range(60)]
    history: list[object] = [
        PortfolioMetrics(
            "banks", 0.18, 0.1, s, T0 + i * MINUTE, count=100 + i,
            weights={"ATW": 0.5, "BCP": 0.5}, sharpe_threshold=threshold,
        )
        for i, s in enumerate(sharpe)
    ]  # fmt: skip
    history += [
        Weights("banks", T0 - 3_600_000, {"ATW": 0.5, "BCP": 0.5}, "initial", "config"),
        Weights("banks", T0 + 30 * MINUTE, {"ATW": 0.62, "BCP": 0.38}, "rebalance", "rebalancer"),
        _event(T0 + 20 * MINUTE, "hold_no_improvement", "Sharpe 0.40 < 0.50 & no gain"),
        _event(T0 + 30 * MINUTE, "rebalance", "Sharpe 0.20 below threshold 0.50"),
        PortfolioMetrics("other", 0.2, 0.1, 1.0, T0),
    ]
    return history


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_store(f"sqlite:///{tmp_path}/history.db")
    StoreWriter(engine).write(_history())  # type: ignore[arg-type]
    yield engine
    engine.dispose()


def _images(page: str) -> list[tuple[str, str, bytes]]:
    return [(alt, mime, base64.b64decode(data)) for alt, mime, data in IMAGE.findall(page)]


def test_the_report_has_the_charts_and_the_decisions(db: Engine, tmp_path: Path) -> None:
    out = tmp_path / "out" / "report.html"
    data = write_report(db, "banks", out, "2026-10-01", "2026-10-01")
    page = out.read_text(encoding="utf-8")
    assert len(data.metrics) == 60 and len(data.events) == 2
    assert [w.reason for w in data.weights] == ["initial", "rebalance"], "from the start"
    images = _images(page)
    assert [alt for alt, _, _ in images] == [
        "Sharpe ratio over time",
        "Expected return and risk over time",
        "Weights over time",
    ]
    assert all(mime == "image/png" and png.startswith(b"\x89PNG") for _, mime, png in images)
    assert page.count("<tr") == 9 + 1 + 2, "summary rows, a header, one row per decision"
    assert "Sharpe 0.20 below threshold 0.50" in page and "hold_no_improvement" in page
    assert "Sharpe 0.40 &lt; 0.50 &amp; no gain" in page, "text from the data is escaped"
    assert "ATW +12.0 pp, BCP -12.0 pp" in page
    assert "2026-10-01 09:30:00" in page, "times in UTC by default"
    assert "updates below the threshold</td><td>14 (23.3%)" in page


def test_the_report_loads_nothing_from_anywhere(db: Engine, tmp_path: Path) -> None:
    page = render_report(load_report(db, "banks"))
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "http://" not in page and "https://" not in page
    assert "url(" not in page


def test_svg_charts_are_embedded_as_images_too(db: Engine) -> None:
    page = render_report(load_report(db, "banks"), image_format="svg")
    images = _images(page)
    assert len(images) == 3
    assert all(mime == "image/svg+xml" and b"<svg" in svg for _, mime, svg in images)
    assert all(b"http://www.w3.org" in svg and b'xlink:href="http' not in svg for *_, svg in images)


def test_times_are_shown_in_the_chosen_zone(db: Engine) -> None:
    page = render_report(load_report(db, "banks"), timezone="Africa/Casablanca")
    assert "2026-10-01 10:30:00" in page and "times in Africa/Casablanca" in page
    with pytest.raises(ReportError, match="unknown time zone 'Mars/Olympus'"):
        render_report(load_report(db, "banks"), timezone="Mars/Olympus")


def test_without_a_stored_threshold_the_configured_one_is_used(tmp_path: Path) -> None:
    engine = open_store(f"sqlite:///{tmp_path}/h.db")
    StoreWriter(engine).write(_history(threshold=None))  # type: ignore[arg-type]
    without = render_report(load_report(engine, "banks"))
    assert "below the threshold" not in without
    page = render_report(load_report(engine, "banks", threshold=0.5))
    assert "updates below the threshold</td><td>14 (23.3%)" in page
    engine.dispose()


def test_a_portfolio_with_one_update_and_no_weights_still_gets_a_page(db: Engine) -> None:
    page = render_report(load_report(db, "other"))
    assert len(_images(page)) == 2
    assert "No weights stored for this portfolio." in page
    assert "No rebalancing decision in this period." in page


def test_no_data_in_the_range_says_where_the_data_is(db: Engine) -> None:
    with pytest.raises(ReportError) as info:
        load_report(db, "banks", "2026-10-02", "2026-10-03")
    message = str(info.value)
    assert "portfolio 'banks' has no metrics between 2026-10-02T00:00:00Z and" in message
    assert "its metrics run from 2026-10-01T09:00:00Z to 2026-10-01T09:59:00Z" in message


def test_an_unknown_portfolio_names_the_known_ones(db: Engine, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="portfolios with metrics: banks, other"):
        load_report(db, "nope")
    empty = open_store(f"sqlite:///{tmp_path}/empty.db")
    with pytest.raises(ReportError, match="no metrics at all: is `streamfolio store` running"):
        load_report(empty, "banks")
    empty.dispose()


# ------------------------------------------------------------------------------ the commands

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_both_commands_have_help(app: typer.Typer) -> None:
    for command in ("store", "report"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "--database" in result.output


def test_report_command_writes_the_page(app: typer.Typer, db: Engine, tmp_path: Path) -> None:
    url = db.url.render_as_string(hide_password=False)
    out = tmp_path / "banks.html"
    result = runner.invoke(
        app,
        [
            *("report", "banks", "--from", "2026-10-01T09:00Z", "--to", "2026-10-01"),
            *("--database", url, "--out", str(out), "--config", str(example_config_path())),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "60 metrics updates, 2 weight sets, 2 decisions (1 rebalances)" in result.output
    page = out.read_text()
    assert len(_images(page)) == 3
    assert "times in Africa/Casablanca" in page, "the configured exchange's zone"


def test_report_command_errors_are_one_line_with_their_exit_code(
    app: typer.Typer, db: Engine, tmp_path: Path
) -> None:
    # 2 for a bad option, 1 for what the database holds (or lacks): streamfolio.errors.
    url = db.url.render_as_string(hide_password=False)
    out = tmp_path / "x.html"
    for args, problem, code in [
        (["banks", "--from", "2027-01-01"], "has no metrics between", 1),
        (["banks", "--from", "yesterday"], "not an ISO-8601", 2),
        (["banks", "--image-format", "gif"], "png or svg", 2),
        (["banks", "--timezone", "Nowhere"], "unknown time zone", 2),
    ]:
        result = runner.invoke(app, ["report", *args, "--database", url, "--out", str(out)])
        assert result.exit_code == code, result.output
        assert problem in result.output and "Traceback" not in result.output
    result = runner.invoke(
        app, ["report", "banks", "--database", f"sqlite:///{tmp_path}/none.db", "--out", str(out)]
    )
    assert result.exit_code == 1 and "no history database" in result.output
    assert not out.exists()


def test_store_command_refuses_an_unsupported_database(app: typer.Typer) -> None:
    result = runner.invoke(app, ["store", "--database", "oracle://db/x", "--duration", "1"])
    assert result.exit_code == 1  # a StoreError: a runtime error under streamfolio.errors' rule
    assert "oracle is not supported" in result.output
