"""The dashboard's HTTP API, event stream and command, without Kafka (starlette's TestClient)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from starlette.exceptions import StarletteDeprecationWarning
from typer.testing import CliRunner

from streamfolio.config import example_config_path
from streamfolio.dashboard.app import create_app, event_stream, parse_cursor
from streamfolio.dashboard.cli import dashboard_command, listen
from streamfolio.dashboard.state import DashboardState
from streamfolio.dashboard.view import PortfolioInfo

with warnings.catch_warnings():
    # starlette >= 1.x asks for the `httpx2` fork and warns when the TestClient falls back to the
    # project's httpx 0.28; the client works the same. Only this import, only this warning.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

T0 = 1_790_000_000_000
BASE_URL = "http://localhost:8050"  # the TestClient's own "testserver" is not an allowed host


def clock() -> float:
    return T0 / 1000 + 5.0  # the state judges event times against this wall clock


def metrics(pid: str, t: int, sharpe: float) -> dict[str, Any]:
    return {
        "portfolioId": pid,
        "risk": 0.2,
        "expectedReturn": 0.1,
        "sharpRatio": sharpe,
        "timestamp": t,
    }


class FakeConsumer:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self, timeout: float = 10.0) -> None:
        self.calls.append("stop")


@pytest.fixture
def state() -> DashboardState:
    infos = [
        PortfolioInfo("banks", ("ATW", "BCP"), "desk", 0.3, 0.05),
        PortfolioInfo("telecom", ("IAM",)),
    ]
    state = DashboardState(infos, clock=clock)
    state.apply("metrics", metrics("banks", T0, 0.4))
    return state


@pytest.fixture
def client(state: DashboardState) -> Iterator[TestClient]:
    with TestClient(create_app(state), base_url=BASE_URL) as c:
        yield c


def parse_sse(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields:
            events.append(
                {
                    "event": fields["event"],
                    "id": fields.get("id"),
                    "data": json.loads(fields["data"]),
                }
            )
    return events


# ------------------------------------------------------------------------------ page and assets


def test_the_page_and_its_assets_are_served_from_the_package(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for asset in ("/static/app.js", "/static/style.css", "/static/vendor/echarts.min.js"):
        assert asset in page.text
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000, asset
    assert "://" not in page.text.replace("http://www.w3.org", "")  # nothing loaded from a CDN
    assert client.get("/static/vendor/ECHARTS-LICENSE").status_code == 200


# ------------------------------------------------------------------------------ JSON API


def test_portfolios_lists_summaries_and_filters(client: TestClient) -> None:
    body = client.get("/api/portfolios").json()
    assert [p["id"] for p in body["portfolios"]] == ["banks", "telecom"]
    banks = body["portfolios"][0]
    assert (banks["sharpe"], banks["threshold"], banks["status"]) == (0.4, 0.3, "above")
    assert [p["id"] for p in client.get("/api/portfolios?q=iam").json()["portfolios"]] == [
        "telecom"
    ]
    assert len(client.get("/api/portfolios?limit=1").json()["portfolios"]) == 1
    bad = client.get("/api/portfolios?limit=x")
    assert bad.status_code == 400 and "limit" in bad.json()["error"]


def test_portfolio_snapshot_and_unknown_portfolio(
    client: TestClient, state: DashboardState
) -> None:
    snap = client.get("/api/portfolio/banks").json()
    assert snap["id"] == "banks" and snap["reset"] and snap["token"] == state.token
    assert snap["metrics"]["sharpe"] == [0.4] and snap["seq"] == state.seq
    missing = client.get("/api/portfolio/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]


def test_health_endpoint(client: TestClient) -> None:
    health = client.get("/api/health").json()
    assert health["last_event_time"] == T0 and health["portfolios"] == 2
    assert health["status"] == "starting" and health["dead_letter_total"] == 0


def test_the_app_starts_and_stops_its_consumer(state: DashboardState) -> None:
    consumer = FakeConsumer()
    closing = threading.Event()
    with TestClient(create_app(state, consumer=consumer, closing=closing), base_url=BASE_URL) as c:
        assert c.get("/api/health").status_code == 200
        assert consumer.calls == ["start"]
    assert consumer.calls == ["start", "stop"] and closing.is_set()


# ------------------------------------------------------------------------------ event stream


def test_parse_cursor_accepts_only_this_servers_cursors() -> None:
    assert parse_cursor("abcd-17", "abcd") == 17
    assert parse_cursor("other-17", "abcd") == -1
    assert parse_cursor("abcd-x", "abcd") == -1
    assert parse_cursor("", "abcd") == -1


def test_stream_pushes_the_selected_portfolio_from_its_cursor_and_health(
    state: DashboardState,
) -> None:
    closing = threading.Event()
    app = create_app(state, closing=closing, interval_s=0.02, health_every_s=0.05)
    cursor = f"{state.token}-{state.seq}"

    def produce() -> None:
        state.apply("metrics", metrics("banks", T0 + 1000, 0.45))
        state.apply("metrics", metrics("telecom", T0 + 1000, 0.9))  # not selected: not pushed
        threading.Timer(0.5, closing.set).start()  # ends the stream, as a shutdown does

    threading.Timer(0.1, produce).start()
    with TestClient(app, base_url=BASE_URL) as c:
        response = c.get(f"/api/stream?portfolio=banks&since={cursor}")
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.startswith("retry: ")
    events = parse_sse(response.text)
    pushed = [e for e in events if e["event"] == "portfolio"]
    assert len(pushed) == 1, "only the change after the cursor"
    assert not pushed[0]["data"]["reset"] and pushed[0]["data"]["metrics"]["sharpe"] == [0.45]
    assert pushed[0]["id"] == f"{state.token}-{pushed[0]['data']['seq']}"
    assert all(e["data"]["id"] == "banks" for e in pushed)
    assert sum(e["event"] == "health" for e in events) >= 2


def test_stream_resumes_from_last_event_id_and_resets_a_foreign_cursor(
    state: DashboardState,
) -> None:
    async def first(since: int) -> dict[str, Any]:
        stream = event_stream(state, "banks", since, closing=threading.Event(), max_events=1)
        chunks = [chunk async for chunk in stream]
        return parse_sse("".join(chunks))[0]

    foreign = parse_cursor("0000-3", state.token)
    full = asyncio.run(first(foreign))
    assert full["event"] == "portfolio" and full["data"]["reset"]
    closing = threading.Event()
    closing.set()
    with TestClient(create_app(state, closing=closing), base_url=BASE_URL) as c:
        response = c.get(
            "/api/stream?portfolio=banks", headers={"Last-Event-ID": f"{state.token}-0"}
        )
    assert response.status_code == 200  # a closing server ends streams at once


def test_stream_without_a_portfolio_carries_health_only(state: DashboardState) -> None:
    async def collect() -> list[dict[str, Any]]:
        stream = event_stream(
            state,
            None,
            -1,
            closing=threading.Event(),
            interval_s=0.01,
            health_every_s=0.0,
            max_events=3,
        )
        return parse_sse("".join([chunk async for chunk in stream]))

    assert [e["event"] for e in asyncio.run(collect())] == ["health"] * 3


# ------------------------------------------------------------------------------ command


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard_command)
    return app


def test_command_serves_prints_its_url_and_stops_after_duration(tmp_path: Path) -> None:
    # A broker that is not there: the page still serves, health says it is waiting.
    config = tmp_path / "c.yaml"
    config.write_text(
        example_config_path()
        .read_text()
        .replace("bootstrap_servers: localhost:9092", "bootstrap_servers: 127.0.0.1:1")
    )
    result = CliRunner().invoke(
        cli(), ["--config", str(config), "--port", "0", "--duration", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "streamfolio dashboard: http://127.0.0.1:" in result.output
    assert "dashboard stopped" in result.output


def test_command_reports_a_busy_port_and_a_bad_config(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli(), ["--port", str(port)])
    assert result.exit_code == 1 and f"cannot listen on 127.0.0.1:{port}" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("portfolios: []\n")
    result = CliRunner().invoke(cli(), ["--config", str(bad), "--port", "0"])
    assert result.exit_code == 2 and "no portfolio configured" in result.output


def test_listen_on_port_zero_picks_a_free_port() -> None:
    with listen("127.0.0.1", 0) as sock:
        assert sock.getsockname()[1] > 0
