"""--log-format json: one JSON object per line with the record's context
(streamfolio.observability.logs), and progress lines logged rather than printed."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from streamfolio.cli_support import say
from streamfolio.errors import UsageError
from streamfolio.observability import logs


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.use_log_format("json", logging.WARNING, stream=stream)
    yield stream
    assert logs._handler is not None
    root.removeHandler(logs._handler)
    logs._handler = None
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_record_is_one_json_line_with_its_context(json_stream: io.StringIO) -> None:
    logging.getLogger("streamfolio.store.service").warning(
        "skipped a message (%s)",
        "invalid",
        extra={"topic": "portfMetrics", "partition": 2, "offset": 41, "portfolio_id": "p1"},
    )
    logging.getLogger("streamfolio.store.service").info("below the level: not written")
    [line] = _lines(json_stream)
    assert line["level"] == "WARNING" and line["logger"] == "streamfolio.store.service"
    assert line["message"] == "skipped a message (invalid)"
    assert (line["topic"], line["partition"], line["offset"]) == ("portfMetrics", 2, 41)
    assert line["portfolio_id"] == "p1"
    assert str(line["time"]).endswith("Z")


def test_an_exception_travels_in_the_line(json_stream: io.StringIO) -> None:
    try:
        raise ValueError("bad weights")
    except ValueError:
        logging.getLogger("streamfolio.rebalancer").exception("deciding failed")
    [line] = _lines(json_stream)
    assert "ValueError: bad weights" in str(line["exception"])


def test_progress_lines_become_json_records(
    json_stream: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    say("p1: rebalance at 1750000000000")
    assert capsys.readouterr().err == ""
    [line] = _lines(json_stream)
    assert line["logger"] == logs.PROGRESS_LOGGER and line["level"] == "INFO"
    assert line["message"] == "p1: rebalance at 1750000000000"


def test_text_changes_nothing_and_other_formats_are_refused() -> None:
    handlers = list(logging.getLogger().handlers)
    logs.use_log_format("text")
    assert logging.getLogger().handlers == handlers and not logs.json_logging()
    with pytest.raises(UsageError, match="--log-format must be text or json"):
        logs.use_log_format("xml")
