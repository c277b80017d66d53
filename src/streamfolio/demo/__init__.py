"""``streamfolio demo``: the whole loop on this machine, and a live view of it.

Starts (and on Ctrl-C, SIGTERM, SIGHUP or ``--duration`` stops, leaving nothing running) the local
Kafka broker, or the secured multi-broker cluster a configuration such as examples/cluster.yaml
asks for, and with ``--flink cluster`` the local Flink session cluster; publishes the example
portfolios' initial state, then runs the streaming job (in its own process, or submitted to the
session cluster and followed), the simulator feed, the rebalancer, the history store and the
dashboard as child processes, each as its own principal, and shows a live table per portfolio:
Sharpe against its threshold, expected return, risk, last rebalance.

A component that exits is restarted with back-off (the job from its newest checkpoint), or with
``--on-failure stop`` the demo stops everything and exits 1 naming it and its log; the live view
shows each component's state and whether the broker answers.

A requested stop (Ctrl-C, ``kill``'s SIGTERM, closing the terminal's SIGHUP) stops the children
newest first (the job's follower cancels the job on the Flink cluster), then the Flink cluster
and the broker if the demo started them, and exits with code 0. The demo empties the
topics it uses before it starts, but only on the local broker it started (or found running) from
the checkout's ``kafka.local.data_dir``: pointed at any other cluster it refuses (see
:func:`check_local_cluster`).

Modules: :mod:`~streamfolio.demo.run` (the steps, :func:`run_demo`; the children,
:func:`~streamfolio.demo.run.components`), :mod:`~streamfolio.demo.engines` (Kafka and Flink:
started if stopped, stopped again if started),
:mod:`~streamfolio.demo.supervision` (children and stop signals), :mod:`~streamfolio.demo.restarts`
(when to restart a child), :mod:`~streamfolio.demo.components` (each child's state),
:mod:`~streamfolio.demo.safety` (topics are reset on the local broker only),
:mod:`~streamfolio.demo.live` (the live view).
"""

from __future__ import annotations

from streamfolio.cli_support import STOP_SIGNALS, StopRequested, stop_signals
from streamfolio.demo.components import ComponentView
from streamfolio.demo.engines import Engines, local_kafka
from streamfolio.demo.live import LiveState, PortfolioView, render, summary_lines, watch
from streamfolio.demo.restarts import RestartPolicy
from streamfolio.demo.run import (
    Component,
    DemoOptions,
    components,
    job_command,
    python_command,
    run_demo,
    sim_start_ms,
)
from streamfolio.demo.safety import check_local_cluster, cluster_id, local_cluster_id
from streamfolio.demo.supervision import (
    Child,
    Failure,
    Supervisor,
    supervise,
    tolerant,
)

__all__ = [
    "STOP_SIGNALS",
    "Child",
    "Component",
    "ComponentView",
    "DemoOptions",
    "Engines",
    "Failure",
    "LiveState",
    "PortfolioView",
    "RestartPolicy",
    "StopRequested",
    "Supervisor",
    "check_local_cluster",
    "cluster_id",
    "components",
    "job_command",
    "local_cluster_id",
    "local_kafka",
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
