"""The dashboard in a real browser against the real broker (issue "See it and keep it").

Starts ``streamfolio dashboard`` as a process on topics of its own, produces metrics, statistics,
weights, rebalance events, dead letters and ticks for three portfolios, and drives Debian's
Chromium with Playwright: the charts draw, follow new records live, and follow the portfolio
picked in the filtered list. Saves docs/dashboard.png, the README's screenshot.

Needs Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the Python package
playwright (test extra); without them this test fails saying so, it does not skip. Playwright's
own browser download (`playwright install`) is not used: it cannot work on this network.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from streamfolio.config import Settings, settings_from_mapping
from streamfolio.kafka.admin import ensure_topics, topic_specs
from streamfolio.kafka.clients import RecordProducer
from streamfolio.kafka.topics import Role, contract

KafkaBroker = Any  # tests/integration/conftest.py: the session broker fixture

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "docs" / "dashboard.png"
CHROMIUM = Path("/usr/bin/chromium")
# From the machine notes: without the background-networking flags Chromium keeps dialling
# Google's hosts, which this network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MINUTE = 60_000
HISTORY = {"portf1": 150, "banks": 120, "telecoms": 60}
WAIT_MS = 15_000


@dataclass(frozen=True)
class Sandbox:
    settings: Settings
    config_path: Path


def _sandbox(broker: KafkaBroker, tmp_path: Path) -> Sandbox:
    """The session broker's settings with topics of our own and a third portfolio."""
    data = yaml.safe_load(broker.config_path.read_text())
    token = uuid.uuid4().hex[:8]
    data["topics"] = {
        role: f"{name.rsplit('-', 1)[0]}-{token}" for role, name in data["topics"].items()
    }
    data["portfolios"].append(
        {
            "id": "telecoms",
            "owner": "desk-b",
            "tickers": ["IAM", "ATW", "LHM"],
            "weights": {"IAM": 0.6, "ATW": 0.25, "LHM": 0.15},
        }
    )
    settings = settings_from_mapping(data)
    ensure_topics(broker.bootstrap, topic_specs(settings))
    path = tmp_path / "streamfolio.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return Sandbox(settings, path)


class Pipeline:
    """Produces what the streaming job and the rebalancer would, for the dashboard to show."""

    def __init__(self, settings: Settings, seed: int = 5) -> None:
        self.settings = settings
        self.producer = RecordProducer(settings.kafka, component="admin")
        self.rng = np.random.default_rng(seed)
        self.sharpe = {"portf1": 0.9, "banks": 0.6, "telecoms": 0.2}
        self.count = dict.fromkeys(self.sharpe, 200)
        self.current: dict[str, dict[str, float]] = {}
        """Each portfolio's weights in force: its metrics carry them (the dashboard, as every
        consumer, refuses metrics whose weights do not fit the portfolio)."""

    def send(self, role: Role, record: dict[str, Any]) -> None:
        self.producer.send(contract(self.settings, role), record)

    def tickers(self, pid: str) -> tuple[str, ...]:
        return self.settings.portfolio(pid).tickers

    def weights(self, pid: str, t: int, reason: str = "initial") -> dict[str, float]:
        # Near equal: within every example portfolio's bounds (portf1 caps each at 0.25).
        raw = self.rng.uniform(0.8, 1.2, len(self.tickers(pid)))
        weights = dict(zip(self.tickers(pid), (raw / raw.sum()).tolist(), strict=True))
        self.current[pid] = weights
        self.send("weights", {"timestamp": t, "portfolio_id": pid, "weights": weights,
                              "reason": reason, "source": "test"})  # fmt: skip
        return weights

    def stats(self, pid: str, t: int) -> None:
        tickers = self.tickers(pid)
        factor = self.rng.normal(size=(len(tickers), 2))
        cov = (factor @ factor.T + np.eye(len(tickers))) * 1e-5
        self.send("updated_stats", {
            "timestamp": t, "portfolio_id": pid, "kind": "updated", "count": self.count[pid],
            "tickers": list(tickers), "meanReturns": dict.fromkeys(tickers, 1e-5),
            "covarianceMatrix": {a: {b: float(cov[i, j]) for j, b in enumerate(tickers)}
                                 for i, a in enumerate(tickers)},
        })  # fmt: skip

    def metrics(self, pid: str, t: int, sharpe: float | None = None) -> None:
        s = self.sharpe[pid] = sharpe if sharpe is not None else (
            self.sharpe[pid] + float(self.rng.normal(-0.004, 0.04)))  # fmt: skip
        self.count[pid] += 1
        risk = 0.16 + 0.02 * float(np.sin(t / 3.6e6))
        self.send("metrics", {
            "portfolioId": pid, "risk": risk, "expectedReturn": 0.025 + s * risk,
            "sharpRatio": s, "timestamp": t, "count": self.count[pid],
            "weights": self.current[pid], "statsTimestamp": t,
        })  # fmt: skip

    def rebalance(self, pid: str, t: int) -> None:
        before = self.sharpe[pid]
        new = self.weights(pid, t, reason="rebalance")
        self.send("rebalance_events", {
            "portfolio_id": pid, "timestamp": t, "reason": "Sharpe below threshold band",
            "decision": "rebalance", "old_weights": new, "new_weights": new,
            "sharpe_before": before, "sharpe_after": before + 0.35, "expected_return_after": 0.09,
            "risk_after": 0.15, "turnover": 0.32, "optimizer_status": "optimal",
            "event_id": f"{pid}@{t}",
        })  # fmt: skip
        self.sharpe[pid] = before + 0.35

    def dead_letter(self, reason: str) -> None:
        self.send("dead_letter", {
            "reason": reason, "detail": f"{reason}: example", "source_topic": "prices",
            "partition": 0, "offset": 1, "key": None, "payload": b"{}",
            "timestamp": int(time.time() * 1000), "component": "job",
        })  # fmt: skip

    def ticks(self, n: int) -> None:
        now = int(time.time() * 1000)
        for i in range(n):
            ticker = ("ATW", "IAM", "BCP")[i % 3]
            self.send("prices", {"ticker": ticker, "price": 100.0 + i % 7, "event_time": now + i,
                                 "source": "test"})  # fmt: skip

    def history(self, now: int) -> None:
        for pid, points in HISTORY.items():
            start = now - points * MINUTE
            self.weights(pid, start - MINUTE)
            for k in range(points):
                t = start + k * MINUTE
                self.metrics(pid, t)
                threshold = self.settings.portfolio(pid).policy.sharpe_threshold
                if k in (points // 3, 2 * points // 3) and pid != "telecoms":
                    self.sharpe[pid] = threshold - 0.1  # a drop through the band...
                    self.metrics(pid, t + 1)
                    self.rebalance(pid, t + 2)  # ...and the rebalancer's answer
            self.stats(pid, now - MINUTE)
        self.dead_letter("late")
        self.dead_letter("invalid")
        self.flush()

    def flush(self) -> None:
        assert self.producer.flush(30) == 0


@pytest.fixture
def sandbox(kafka_broker: KafkaBroker, tmp_path: Path) -> Sandbox:
    return _sandbox(kafka_broker, tmp_path)


@pytest.fixture
def dashboard(sandbox: Sandbox, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The dashboard as a user starts it, on a free port; yields its URL and process."""
    stderr = (tmp_path / "dashboard.err").open("w")
    command = [sys.executable, "-m", "streamfolio.dashboard.cli"]
    process = subprocess.Popen(
        [*command, "--config", str(sandbox.config_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    out = process.stdout
    reader = threading.Thread(target=lambda: [lines.put(line) for line in out], daemon=True)
    reader.start()
    try:
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            pytest.fail(f"dashboard printed no URL; stderr: {_read(tmp_path / 'dashboard.err')}")
        match = re.search(r"(http://127\.0\.0\.1:\d+/)", first)
        assert match, first
        yield match.group(1), process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        reader.join(5)  # it ends at the pipe's end of file; then the pipe can be closed
        out.close()
        stderr.close()


def _read(path: Path) -> str:
    return path.read_text()[-2000:] if path.exists() else ""


def _require_browser() -> Any:
    if not CHROMIUM.exists():
        pytest.fail(
            f"the dashboard browser test needs Chromium at {CHROMIUM}: apt-get install -y chromium",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the dashboard browser test needs the Python package playwright (the test extra): "
            "pip install -e '.[test]' (no `playwright install`: it drives Debian's chromium)",
            pytrace=False,
        )
    return sync_playwright


# Pixels a chart has drawn: ECharts paints on 2D canvases (the heatmap on a layer of its own);
# a blank canvas is transparent.
_PAINTED = """id => {
  let painted = 0;
  for (const canvas of document.querySelectorAll(`#${id} canvas`)) {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < data.length; i += 4) if (data[i] > 0) painted++;
  }
  return painted;
}"""
CHARTS = ("chart-sharpe", "chart-return-risk", "chart-weights", "chart-corr")


def _points(page: Any, chart: str) -> int:
    return int(page.get_attribute(f"#{chart}", "data-points"))


def _wait_for(page: Any, expression: str, arg: Any = None, timeout: float = WAIT_MS) -> None:
    """Poll ``expression`` in the page until it is truthy.

    Not ``page.wait_for_function``: its predicate runs through ``eval`` in the page, which the
    dashboard's Content-Security-Policy (``script-src 'self'``) rightly forbids, and bypassing
    the policy would also stop the test from catching a page the policy breaks.
    """
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression, arg):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page never made {expression!r} true")
        time.sleep(0.1)


def _wait_points(page: Any, chart: str, expected: int) -> None:
    _wait_for(
        page,
        "([id, n]) => Number(document.getElementById(id).dataset.points) === n",
        [chart, expected],
    )


def test_dashboard_renders_updates_live_and_switches_portfolio(
    sandbox: Sandbox, dashboard: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    sync_playwright = _require_browser()
    url, process = dashboard
    pipeline = Pipeline(sandbox.settings)
    now = int(time.time() * 1000)
    pipeline.history(now)
    errors: list[str] = []

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1480})
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The page must work under its own Content-Security-Policy: a violation is an error.
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        try:
            page.goto(url + "#banks")
            _history_draws(page)
            _new_records_show_live(page, pipeline)
            _picking_another_portfolio_switches_the_view(page, pipeline)
            _screenshot(page, pipeline)
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"what the page showed: {tmp_path / 'failure.png'}")
            raise
        finally:
            browser.close()

    assert not errors, errors
    # Ctrl-C stops it cleanly, promptly, with exit status 0, although a browser was connected.
    process.send_signal(signal.SIGINT)
    assert process.wait(15) == 0


def _history_draws(page: Any) -> None:
    """Every chart has points and paint, the table its decisions, the health its dead letters."""
    _wait_points(page, "chart-sharpe", HISTORY["banks"] + 2)  # two drops through the band
    _wait_points(page, "chart-corr", 9)  # 3 x 3 correlations
    assert page.inner_text("#pf-title") == "banks"
    assert _points(page, "chart-weights") == 3  # initial + two rebalances
    for chart in CHARTS:  # ECharts paints on the next animation frame: wait for it
        _wait_for(page, f"({_PAINTED})('{chart}') > 2000")
    assert page.locator("#events tbody tr").count() == 2
    assert page.inner_text("#kpi-threshold") == "0.30 ± 0.05"
    _wait_for(page, "document.getElementById('strip-dead').textContent === '2'")


def _now() -> int:
    # Live records carry the current time: after the history, which ends a minute ago.
    return int(time.time() * 1000)


def _new_records_show_live(page: Any, pipeline: Pipeline) -> None:
    """New metrics reach the open page through the event stream, without a reload."""
    t = _now()  # distinct times: a record with a time already shown replaces that point
    for k in range(3):
        pipeline.metrics("banks", t + k)
    pipeline.metrics("banks", t + 3, sharpe=1.25)
    pipeline.flush()
    _wait_points(page, "chart-sharpe", HISTORY["banks"] + 2 + 4)
    _wait_for(page, "document.getElementById('kpi-sharpe').textContent === '1.250'")
    assert page.get_attribute("#kpi-sharpe", "data-status") == "above"


def _picking_another_portfolio_switches_the_view(page: Any, pipeline: Pipeline) -> None:
    """Filter the list, pick another portfolio: its data and then its updates follow."""
    page.fill("#search", "tele")
    assert page.inner_text("#list-count") == "1 of 3 portfolios"
    page.click("#portfolio-list li[data-id='telecoms']")
    _wait_for(page, "document.getElementById('pf-title').textContent === 'telecoms'")
    _wait_points(page, "chart-sharpe", HISTORY["telecoms"])
    assert page.url.endswith("#telecoms")
    pipeline.metrics("telecoms", _now(), sharpe=0.05)
    pipeline.metrics("banks", _now())  # the previous selection: no longer drawn
    pipeline.flush()
    _wait_points(page, "chart-sharpe", HISTORY["telecoms"] + 1)
    assert page.inner_text("#kpi-sharpe") == "0.050"
    assert page.get_attribute("#kpi-sharpe", "data-status") == "below"


def _screenshot(page: Any, pipeline: Pipeline) -> None:
    """The README's screenshot: the 11-ticker portfolio, with ticks flowing."""
    page.fill("#search", "")
    page.click("#portfolio-list li[data-id='portf1']")
    _wait_points(page, "chart-sharpe", HISTORY["portf1"] + 2)
    _wait_points(page, "chart-corr", 121)
    pipeline.ticks(300)
    pipeline.flush()
    _wait_for(page, "Number(document.getElementById('strip-ticks').textContent) > 0")
    for chart in CHARTS:
        _wait_for(page, f"({_PAINTED})('{chart}') > 2000")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 50_000
