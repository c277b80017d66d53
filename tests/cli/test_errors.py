"""One error story for every command: a usage error (a bad option value, a missing or wrong
configuration) exits 2, a runtime error (a malformed input file, a busy port, a missing database)
exits 1; both say ``error:``, name the thing and the fix, and show no traceback. No broker."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.config import example_config_path

runner = CliRunner()
EXAMPLE = str(example_config_path())
NO_ENV = {"STREAMFOLIO_CONFIG": "", "COLUMNS": "200"}


def _run(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, args, input=stdin, env=NO_ENV)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.output


# Our own checks: `error: <message>`, naming the option (or key) and what to write instead.
USAGE = {
    "init": (["init", "--config", "/nonexistent/nope.yaml"], ["nope.yaml", "fix:"]),
    "replay": (["replay", "--prices", "x.csv", "--format", "xml"], ["--format", "jsonl or csv"]),
    "demo offline duration": (["demo", "--offline", "--duration", "60"], ["--duration", "fix:"]),
    "demo bars": (["demo", "--bars", "20"], ["--bars", "fix: add --offline"]),
    "demo source": (["demo", "--source", "ftp"], ["--source", "sim, replay or cse"]),
    "demo replay": (["demo", "--source", "replay"], ["--prices FILE"]),
    "feed start": (["feed", "--start", "yesterday", "-c", EXAMPLE], ["--start", "fix:"]),
    "feed source": (["feed", "--source", "ftp", "-c", EXAMPLE], ["--source", "heartbeats"]),
    "feed replay": (["feed", "--source", "replay", "-c", EXAMPLE], ["--prices FILE"]),
    "fetch-history": (["fetch-history", "--from", "yesterday"], ["--from", "fix:"]),
    "topic tail": (["topic", "tail", "nope", "-c", EXAMPLE], ["unknown topic 'nope'", "prices"]),
    "topic produce": (["topic", "produce", "nope", "-c", EXAMPLE], ["unknown topic 'nope'"]),
    "kafka status": (["kafka", "status", "-c", "/nonexistent/k.yaml"], ["k.yaml", "fix:"]),
    "job run": (["job", "run", "--delivery", "sometimes"], ["--delivery", "exactly-once"]),
    "job submit": (["job", "submit", "--starting-offsets", "x"], ["--starting-offsets"]),
    "store": (["store", "-c", "/nonexistent/s.yaml", "--duration", "1"], ["s.yaml", "fix:"]),
    "report from": (["report", "banks", "--from", "yesterday"], ["--from", "fix:"]),
    "report zone": (["report", "banks", "--timezone", "Nowhere"], ["--timezone", "fix:"]),
    "report image": (["report", "banks", "--image-format", "gif"], ["png or svg"]),
    "rebalancer": (["rebalancer"], ["--config", "fix: pass --config PATH"]),
    "dashboard": (["dashboard", "-c", "/nonexistent/d.yaml"], ["d.yaml", "fix:"]),
}


@pytest.mark.parametrize("case", sorted(USAGE))
def test_a_usage_error_exits_2_naming_the_option_and_the_fix(case: str) -> None:
    args, expected = USAGE[case]
    code, output = _run(args)
    assert code == 2, output
    assert output.startswith("error: "), output
    for text in expected:
        assert text in output, output


# typer/click's own checks (ranges, types, missing options): exit 2, naming the option.
CLICK_USAGE = [
    ["simulate", "--out", "x.csv", "--bars", "0"],
    ["demo", "--duration", "-1"],
    ["feed", "--duration", "-1"],
    ["kafka", "up", "--timeout", "0"],
    ["store", "--batch-size", "0"],
    ["dashboard", "--port", "70000"],
    ["replay"],
]


@pytest.mark.parametrize("args", CLICK_USAGE, ids=" ".join)
def test_a_bad_option_value_is_a_usage_error(args: list[str]) -> None:
    code, output = _run(args)
    assert code == 2, output
    assert "Error" in output and "'--" in output, output


def test_a_malformed_history_is_a_runtime_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("time,ticker,price\nyesterday,ATW,700\n")
    code, output = _run(["init", "-c", EXAMPLE, "--history", str(bad)])
    assert code == 1 and output.startswith("error: ") and f"{bad}:2" in output, output


def test_a_malformed_tick_file_is_a_runtime_error(tmp_path: Path) -> None:
    bad = tmp_path / "ticks.csv"
    bad.write_text("time,ticker,price,partition\n2026-10-01T10:00:00Z,ATW,699,x\n")
    code, output = _run(["replay", "-c", EXAMPLE, "--prices", str(bad)])
    assert code == 1 and output.startswith("error: "), output
    assert f"{bad}:2" in output and "bad partition 'x'" in output, output


def test_malformed_input_to_produce_is_a_runtime_error() -> None:
    code, output = _run(["topic", "produce", "prices", "-c", EXAMPLE], stdin="not json\n")
    assert code == 1 and output.startswith("error: stdin line 1: not JSON"), output


def test_a_missing_history_database_is_a_runtime_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/none.db"
    code, output = _run(["report", "banks", "--database", url, "--out", str(tmp_path / "r.html")])
    assert code == 1 and output.startswith("error: no history database"), output
    assert "run `streamfolio store` first" in output


def test_a_busy_port_is_a_runtime_error() -> None:
    pytest.importorskip("starlette")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, output = _run(["dashboard", "-c", EXAMPLE, "--port", str(port)])
    assert code == 1 and f"cannot listen on 127.0.0.1:{port}" in output, output


def test_a_value_error_that_escapes_is_a_bug_and_keeps_its_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamfolio import state

    def broken(*_args: object, **_kwargs: object) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(state, "initial_state", broken)
    result = runner.invoke(app, ["init", "-c", EXAMPLE], env=NO_ENV)
    assert isinstance(result.exception, ValueError)
    assert result.exit_code == 1
