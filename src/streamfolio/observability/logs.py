"""``--log-format json``: one JSON object per log line, for a log pipeline to index.

Every line has ``time`` (UTC, ISO-8601 with milliseconds), ``level``, ``logger`` and
``message``; a record logged with ``extra={"portfolio_id": ..., "topic": ..., "partition": ...,
"offset": ...}`` carries those fields too (:data:`CONTEXT_FIELDS`), and a logged exception its
traceback as ``exception``. ``text`` (the default) leaves each command's logging as it was.

With JSON on, :func:`streamfolio.cli_support.say` (a command's progress lines on stderr) logs
through the ``streamfolio.progress`` logger instead of printing, so stderr holds nothing but
JSON lines.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any, Final, Literal, TextIO

from streamfolio.errors import UsageError

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "PROGRESS_LOGGER",
    "JsonFormatter",
    "json_logging",
    "use_log_format",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("text", "json")

CONTEXT_FIELDS: Final = ("portfolio_id", "topic", "partition", "offset", "component", "reason")
"""Attributes of a record (set with ``extra=``) that a JSON line carries when present."""

PROGRESS_LOGGER: Final = "streamfolio.progress"
"""Where :func:`~streamfolio.cli_support.say` sends progress lines when JSON is on."""

_handler: logging.Handler | None = None


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON.

    >>> record = logging.LogRecord("streamfolio.store", logging.WARNING, __file__, 1,
    ...                            "skipped %s", ("one",), None)
    >>> record.created, record.msecs = 1750000000.25, 250.0
    >>> record.topic, record.offset = "portfMetrics", 7
    >>> print(JsonFormatter().format(record))
    {"time": "2025-06-15T15:06:40.250Z", "level": "WARNING", "logger": "streamfolio.store", \
"message": "skipped one", "topic": "portfMetrics", "offset": 7}
    """

    def format(self, record: logging.LogRecord) -> str:
        moment = dt.datetime.fromtimestamp(record.created, dt.UTC)
        line: dict[str, Any] = {
            "time": moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value if isinstance(value, int | float | str | bool) else str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def use_log_format(
    log_format: str, level: int = logging.WARNING, *, stream: TextIO | None = None
) -> None:
    """Apply ``--log-format``: ``json`` replaces the root logger's handlers by one that writes
    JSON lines to ``stream`` (stderr) at ``level``; ``text`` changes nothing. Any other value is
    a :class:`~streamfolio.errors.UsageError`."""
    global _handler
    if log_format not in LOG_FORMATS:
        raise UsageError(f"--log-format must be text or json, not {log_format!r}")
    if log_format == "text":
        return
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    for handler in list(root.handlers):
        if isinstance(handler, logging.StreamHandler) and handler.stream in (
            sys.stderr,
            sys.stdout,
        ):
            root.removeHandler(handler)  # the text handler configure_logging installed
    _handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    _handler.setFormatter(JsonFormatter())
    root.addHandler(_handler)
    # Loggers that write to stderr themselves (the job's outage lines: streamfolio.flink.driver)
    # write JSON too.
    for logger in list(logging.Logger.manager.loggerDict.values()):
        for handler in getattr(logger, "handlers", ()):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setFormatter(JsonFormatter())
    root.setLevel(level)
    # Progress lines are INFO whatever the level: a logger's own level decides, not the root's.
    logging.getLogger(PROGRESS_LOGGER).setLevel(logging.INFO)


def json_logging() -> bool:
    """Whether ``--log-format json`` is on in this process (see :func:`use_log_format`)."""
    return _handler is not None
