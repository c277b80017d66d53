"""The demo's steps: start (or find) the local broker or cluster, and with ``--flink cluster``
the local Flink session cluster, empty the topics, publish the initial state, start the job,
the feed, the rebalancer, the store and the dashboard as child processes (restarted when they
exit, the job from its newest checkpoint), then show the live view; every stop runs the same
shutdown (:func:`run_demo`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import streamfolio.demo.safety as safety
from streamfolio.config import Settings
from streamfolio.demo.components import broker_probe
from streamfolio.demo.engines import Engines, FlinkMode
from streamfolio.demo.live import live_view
from streamfolio.demo.supervision import OnFailure, Progress, Supervisor, supervise, tolerant
from streamfolio.errors import UsageError


def python_command(*args: str) -> list[str]:
    """Run a streamfolio subcommand with this interpreter (works without the venv on PATH)."""
    return [sys.executable, "-m", "streamfolio.cli", *args]


@dataclass(frozen=True)
class DemoOptions:
    config_path: Path
    duration_s: float | None = None
    source: str = "sim"
    prices: Path | None = None
    speed: float = 0.0
    seed: int = 7
    dashboard_port: int = 8050
    keep_topics: bool = False
    log_dir: Path = Path(".cache/demo")
    on_failure: OnFailure = "restart"
    flink: FlinkMode = "local"
    """``local``: the job in its own process, on a MiniCluster (``job run``); ``cluster``: on
    the local Flink session cluster (``job submit --execute --follow``)."""
    log_format: str = "text"
    """``json``: the feed, rebalancer, store and dashboard log JSON lines (``--log-format``)."""


SIM_ARGS = (
    # One trading day every two seconds, calibrated on the real CSE history; after 90 s (about
    # 45 simulated days) the three banks sell off, which pushes portf1 below its threshold.
    # The simulated clock starts where the history ends (sim_start_ms), so it soon runs ahead
    # of the wall clock: demo.yaml's validation.max_future_skew_ms accepts that.
    "--rate",
    "22",
    "--speedup",
    "43200",
    "--calibration",
    "history",
    "--drift",
    "0.6",
    "--regime-change-after",
    "90",
    "--crash",
    "ATW,BCP,BOA",
    "--crash-drift",
    "-3",
)


def sim_start_ms(state: dict[str, Any]) -> int:
    """Where the simulated market starts: the end of the history the initial state comes from.

    The initial statistics and weights are stamped with the history's last close and take
    effect at that event time, so the simulator's first bar comes after them; and its prices
    start from those closes. Starting there, rather than at the wall clock, keeps the first
    minutes of the demo in the past.

    >>> sim_start_ms({"portfolios": [{"stats": {"timestamp": 5}, "weights": {"timestamp": 7}}]})
    7
    """
    return max(
        int(entry[part]["timestamp"])
        for entry in state["portfolios"]
        for part in ("stats", "weights")
    )


def resume_command(fresh: list[str], checkpoint_dir: Path, since: float) -> Callable[[], list[str]]:
    """The job's command for a restart: ``fresh`` resuming from the newest complete checkpoint
    under ``checkpoint_dir`` written since ``since`` (wall-clock seconds: the demo's first start
    of the job), else ``fresh`` itself. An older checkpoint is an earlier demo's, whose offsets
    and state belong to topics this demo emptied.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> command = resume_command(["job", "run"], root, since=0.0)
    >>> command()
    ['job', 'run']
    >>> (root / "abc" / "chk-3").mkdir(parents=True); (root / "abc/chk-3/_metadata").touch()
    >>> command()[-1] == str(root / "abc" / "chk-3")
    True
    >>> resume_command(["job", "run"], root, since=time.time() + 60)()
    ['job', 'run']
    """
    from streamfolio.flink.runtime import latest_checkpoint

    def command() -> list[str]:
        with contextlib.suppress(OSError):  # a checkpoint removed while looking: start afresh
            found = latest_checkpoint(checkpoint_dir)
            if found is not None and (found / "_metadata").stat().st_mtime >= since:
                return [*fresh, "--from-checkpoint", str(found)]
        return fresh

    return command


def job_command(flink: FlinkMode, config: str) -> list[str]:
    """The job's child process: the job itself on a MiniCluster, or a follower of the job it
    submits to the session cluster (it cancels the job when stopped, and exits when the job
    ends, so the supervisor restarts it like any child).

    >>> job_command("local", "c.yaml")[-4:]
    ['job', 'run', '--config', 'c.yaml']
    >>> job_command("cluster", "c.yaml")[-6:]
    ['job', 'submit', '--execute', '--follow', '--config', 'c.yaml']
    """
    if flink == "cluster":
        return python_command("job", "submit", "--execute", "--follow", "--config", config)
    return python_command("job", "run", "--config", config)


def job_environment(
    flink: FlinkMode, parallelism: int, environ: Mapping[str, str]
) -> dict[str, str]:
    """What the job's child adds to the environment: the job's Python functions in process
    mode on the session cluster or at a parallelism above 1, unless ``environ`` chooses
    (``STREAMFOLIO_FLINK_PYTHON_MODE``).

    Thread mode, the default, hung at parallelism 2 (examples/cluster.yaml), on the session
    cluster as on ``job run``'s MiniCluster: some tasks opening their Python functions in the
    one embedded interpreter of their JVM never returned (INITIALIZING for minutes, no bar
    processed, and on the cluster a cancel that never completed). Process mode is what every
    test of the job at parallelism 2 or on a cluster runs; at parallelism 1 (examples/demo.yaml)
    thread mode works and stays.

    >>> job_environment("cluster", 1, {}), job_environment("local", 2, {})
    ({'STREAMFOLIO_FLINK_PYTHON_MODE': 'process'}, {'STREAMFOLIO_FLINK_PYTHON_MODE': 'process'})
    >>> job_environment("cluster", 2, {"STREAMFOLIO_FLINK_PYTHON_MODE": "thread"})
    {}
    >>> job_environment("local", 1, {})
    {}
    """
    from streamfolio.flink.runtime import PYTHON_MODE_ENV

    if environ.get(PYTHON_MODE_ENV) or (flink == "local" and parallelism == 1):
        return {}
    return {PYTHON_MODE_ENV: "process"}


@dataclass(frozen=True)
class Component:
    """A child process of the demo: its name (and log's), command, what a restart runs, and
    what it adds to the demo's environment."""

    name: str
    argv: list[str]
    restart_argv: Callable[[], list[str]] | None = None
    may_finish: bool = False
    env: dict[str, str] = field(default_factory=dict)


def components(
    options: DemoOptions,
    settings: Settings,
    state: dict[str, Any],
    since: float,
    environ: Mapping[str, str] | None = None,
) -> list[Component]:
    """The demo's children in start order: the job (resuming, when restarted, from its newest
    checkpoint written since ``since``), the feed, the rebalancer, the store, the dashboard.
    Every one is given ``--config``: each connects as its own principal. ``environ``: the
    demo's environment (default ``os.environ``)."""
    config = str(options.config_path)
    job = job_command(options.flink, config)
    checkpoints = Path(settings.flink.checkpoint_dir).resolve()
    job_env = job_environment(
        options.flink, settings.flink.parallelism, os.environ if environ is None else environ
    )
    logs = ("--log-format", "json") if options.log_format == "json" else ()
    return [
        Component("job", job, resume_command(job, checkpoints, since), env=job_env),
        Component(
            "feed",
            python_command("feed", *_feed_args(options, state), "--config", config, *logs),
            may_finish=options.source == "replay",  # done at the end of its file
        ),
        Component("rebalancer", python_command("rebalancer", "--config", config, *logs)),
        Component("store", python_command("store", "--config", config, *logs)),
        Component(
            "dashboard",
            python_command(
                "dashboard", "--config", config, "--port", str(options.dashboard_port), *logs
            ),
        ),
    ]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()


def run_demo(options: DemoOptions, progress: Progress) -> int:
    """Run the loop until ``duration_s``, Ctrl-C, SIGTERM or SIGHUP; returns a process exit code
    (0 for a requested stop, as for a run to ``duration_s``)."""
    from rich.console import Console
    from rich.live import Live

    from streamfolio.config import load_config
    from streamfolio.kafka.local import repo_root
    from streamfolio.state import initial_state, publish_state

    progress = tolerant(progress)
    settings = load_config(options.config_path)
    engines = Engines(settings, repo_root(), progress, flink=options.flink)
    supervisor = Supervisor(options.log_dir, progress, on_failure=options.on_failure)

    def body() -> int:
        engines.up_kafka()
        if not options.keep_topics:
            safety.check_local_cluster(settings, engines.kafka)
            safety.reset_topics(settings, progress)
        engines.up_flink()
        state = initial_state(settings, progress=progress)
        publish_state(settings, state, progress=progress)
        for child in components(options, settings, state, since=time.time()):
            supervisor.start(
                child.name,
                child.argv,
                child.env,
                restart_argv=child.restart_argv,
                may_finish=child.may_finish,
            )
        progress(f"dashboard: http://127.0.0.1:{options.dashboard_port}  (Ctrl-C stops everything)")
        probe = broker_probe(settings.kafka.bootstrap_servers, engines.kafka)
        console = Console(stderr=True)
        return live_view(settings, supervisor, options.duration_s, console, Live, probe)

    def shutdown() -> None:
        supervisor.stop_all()  # the job's follower cancels the job on the Flink cluster
        engines.down()

    return supervise(body, shutdown, progress)


def _feed_args(options: DemoOptions, state: dict[str, Any]) -> list[str]:
    if options.source == "sim":
        start = _iso(sim_start_ms(state))
        return ["--source", "sim", "--seed", str(options.seed), "--start", start, *SIM_ARGS]
    if options.source == "replay":
        if options.prices is None:
            raise UsageError("--source replay needs --prices FILE (a tick CSV time,ticker,price)")
        return [
            "--source",
            "replay",
            "--prices",
            str(options.prices),
            "--speed",
            str(options.speed),
        ]
    return ["--source", "cse"]
