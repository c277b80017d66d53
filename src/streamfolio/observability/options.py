"""The command-line options of :mod:`streamfolio.observability`, shared by every long-running
command (feed, job run, rebalancer, store, dashboard, demo)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["LogFormatOption", "MetricsPortOption"]

LogFormatOption = Annotated[
    str,
    typer.Option(
        "--log-format",
        help="text, or json: one JSON object per line on stderr (time, level, logger, message, "
        "portfolio_id/topic/partition/offset where they apply).",
    ),
]
"""``--log-format`` (:func:`streamfolio.observability.logs.use_log_format`)."""

MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus metrics on this local port (/metrics); 0: none. "
        "Default: metrics.<component>_port in the configuration (0).",
        show_default=False,
    ),
]
"""``--metrics-port`` (:func:`streamfolio.observability.metrics.serve_metrics`)."""
