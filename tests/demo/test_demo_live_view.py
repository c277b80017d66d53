"""The live view shows each component's state and the broker's (issue #13, item 3): rendered
to text as a terminal would show it. No broker."""

from __future__ import annotations

import socket
from pathlib import Path

from rich.console import Console

from streamfolio.demo import ComponentView, LiveState, PortfolioView, render, summary_lines
from streamfolio.demo.components import broker_probe, tcp_reachable

COMPONENTS = (
    ComponentView("job", "running", "pid 4242", 0, Path(".cache/demo/job.log")),
    ComponentView("feed", "waiting for the broker", "for 12 s", 0, Path(".cache/demo/feed.log")),
    ComponentView("rebalancer", "restarting", "in 4 s", 2, Path(".cache/demo/rebalancer.log")),
    ComponentView("store", "failed", "exit code 3", 5, Path(".cache/demo/store.log")),
    ComponentView("dashboard", "stopped", "killed by SIGTERM", 0, None),
)


def _text(renderable: object) -> str:
    console = Console(record=True, width=200, color_system=None)
    console.print(renderable)
    return console.export_text()


def _row(text: str, name: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(f"│ {name} ")]
    return [cell.strip() for cell in line.split("│") if cell.strip()]


def test_each_component_has_a_row_with_its_state_restarts_and_log() -> None:
    state = LiveState(components=COMPONENTS, broker="reachable")
    state.portfolios["portf1"] = PortfolioView(sharpe=0.4, threshold=0.5)

    text = _text(render(state))

    assert "portf1" in text, "the portfolios' table is still there"
    assert _row(text, "broker") == ["broker", "reachable"]
    assert _row(text, "job") == ["job", "running", "pid 4242", "0", ".cache/demo/job.log"]
    assert _row(text, "feed")[1:3] == ["waiting for the broker", "for 12 s"]
    assert _row(text, "rebalancer")[1:4] == ["restarting", "in 4 s", "2"]
    assert _row(text, "store")[1:4] == ["failed", "exit code 3", "5"]
    assert _row(text, "dashboard") == ["dashboard", "stopped", "killed by SIGTERM", "0"]


def test_a_broker_that_does_not_answer_is_shown_as_such() -> None:
    text = _text(render(LiveState(broker="down (no broker process)")))
    assert _row(text, "broker") == ["broker", "down (no broker process)"]


def test_without_components_the_view_is_the_portfolio_table_alone() -> None:
    text = _text(render(LiveState()))
    assert "streamfolio demo" in text and "components" not in text


def test_the_plain_lines_name_every_component_state() -> None:
    lines = summary_lines(LiveState(components=COMPONENTS, broker="reachable"))
    assert lines[-1] == (
        "  components: broker reachable, job running, feed waiting for the broker (for 12 s), "
        "rebalancer restarting (in 4 s), store failed (exit code 3), "
        "dashboard stopped (killed by SIGTERM)"
    )


class _Broker:
    def __init__(self, running: bool) -> None:
        self.running = running
        self.asked = 0

    def is_running(self) -> bool:
        self.asked += 1
        return self.running


def test_the_broker_probe_looks_for_the_process_only_when_the_port_does_not_answer() -> None:
    up, starting, gone = _Broker(True), _Broker(True), _Broker(False)
    assert broker_probe("localhost:9092", up, reachable=lambda _b: True)() == "reachable"
    assert up.asked == 0
    not_answering = broker_probe("localhost:9092", starting, reachable=lambda _b: False)()
    assert not_answering == "not answering (its process runs)"
    assert broker_probe("x:1", gone, reachable=lambda _b: False)() == "down (no broker process)"


def test_tcp_reachable_tries_each_bootstrap_address() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert tcp_reachable(f"127.0.0.1:1,127.0.0.1:{port}")
    assert not tcp_reachable(f"127.0.0.1:{port}", timeout=0.2)
    assert not tcp_reachable("no-port-here")
