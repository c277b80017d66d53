"""``streamfolio demo``: the whole loop on this machine, and a live view of it.

Starts (and on Ctrl-C, SIGTERM, SIGHUP or ``--duration`` stops, leaving nothing running) the local
Kafka broker, publishes the example portfolios' initial state, then runs the streaming job, the
simulator feed, the rebalancer, the history store and the dashboard as child processes, and shows
a live table per portfolio: Sharpe against its threshold, expected return, risk, last rebalance.

A requested stop (Ctrl-C, ``kill``'s SIGTERM, closing the terminal's SIGHUP) stops the children
newest first, then the broker if the demo started it, and exits with code 0. The demo empties the
topics it uses before it starts, but only on the local broker it started (or found running) from
the checkout's ``kafka.local.data_dir``: pointed at any other cluster it refuses (see
:func:`check_local_cluster`).

Modules: :mod:`~streamfolio.demo.run` (the steps, :func:`run_demo`),
:mod:`~streamfolio.demo.supervision` (children and stop signals), :mod:`~streamfolio.demo.safety`
(topics are reset on the local broker only), :mod:`~streamfolio.demo.live` (the live view).
"""

from __future__ import annotations

from streamfolio.demo.live import LiveState, PortfolioView, render, summary_lines, watch
from streamfolio.demo.run import DemoOptions, python_command, run_demo, sim_start_ms
from streamfolio.demo.safety import check_local_cluster, cluster_id, local_cluster_id
from streamfolio.demo.supervision import (
    STOP_SIGNALS,
    Child,
    StopRequested,
    Supervisor,
    stop_signals,
    supervise,
    tolerant,
)

__all__ = [
    "STOP_SIGNALS",
    "Child",
    "DemoOptions",
    "LiveState",
    "PortfolioView",
    "StopRequested",
    "Supervisor",
    "check_local_cluster",
    "cluster_id",
    "local_cluster_id",
    "python_command",
    "render",
    "run_demo",
    "sim_start_ms",
    "stop_signals",
    "summary_lines",
    "supervise",
    "tolerant",
    "watch",
]
