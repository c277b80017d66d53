"""``streamfolio job run | submit | status | stop | state``: the streaming job, in this process
or on a Flink cluster, and what its checkpoints hold.

Registered by the main CLI with ``app.add_typer(job_app)``. ``run`` executes the job in this
process on a local Flink MiniCluster (until it is stopped, or to the end of the input with
``--bounded``). ``submit`` prints the ``flink run`` command for a session cluster (by default
the local one of ``streamfolio flink up``, :mod:`streamfolio.flink.cluster`) and runs it with
``--execute``; ``status`` lists the cluster's jobs; ``stop`` cancels one, or stops it with a
savepoint to resume from; ``state`` reads a checkpoint's keyed state, per portfolio
(:mod:`streamfolio.flink.checkpoint_state`).
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamfolio.cli_support import (
    ConfigOption,
    RequiredConfigOption,
    command_errors,
    load_settings,
    one_of,
    say,
    stop_signals,
)
from streamfolio.errors import UsageError
from streamfolio.flink.cluster.submit import flink_binary, submit_command
from streamfolio.observability.options import LogFormatOption

if TYPE_CHECKING:
    from streamfolio.flink.cluster.rest import FlinkRest

__all__ = ["flink_binary", "job_app", "submit_command"]

job_app = typer.Typer(
    name="job",
    help="The streaming job (PyFlink): ticks → bars → statistics and metrics, Kafka to Kafka.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ParallelismOption = Annotated[
    int | None,
    typer.Option(
        min=1, help="Operator parallelism (default: flink.parallelism).", show_default=False
    ),
]
FromCheckpointOption = Annotated[
    str | None,
    typer.Option(
        "--from-checkpoint",
        help="Resume from a checkpoint or savepoint PATH, or 'latest': the newest complete "
        "checkpoint retained under flink.checkpoint_dir.",
        show_default=False,
    ),
]
OffsetsOption = Annotated[
    str | None,
    typer.Option(
        "--starting-offsets",
        help="latest | earliest: where a fresh start reads the prices topic (default: "
        "flink.starting_offsets). Ignored when resuming.",
        show_default=False,
    ),
]
DeliveryOption = Annotated[
    str | None,
    typer.Option(
        help="at-least-once | exactly-once (default: flink.delivery). Exactly-once output is "
        "visible to read_committed consumers only at checkpoints.",
        show_default=False,
    ),
]


def _choice(value: str | None, allowed: tuple[str, ...], option: str) -> str | None:
    return None if value is None else one_of(value, allowed, option)


def _job_args(
    config: Path | None,
    parallelism: int | None,
    from_checkpoint: str | None,
    starting_offsets: str | None,
    delivery: str | None,
    bounded: bool,
) -> list[str]:
    args: list[str] = []
    if config is not None:
        args += ["--config", str(config.resolve())]
    if parallelism is not None:
        args += ["--parallelism", str(parallelism)]
    if from_checkpoint is not None:
        args += ["--from-checkpoint", from_checkpoint]
    if starting_offsets is not None:
        args += ["--starting-offsets", starting_offsets]
    if delivery is not None:
        args += ["--delivery", delivery]
    if bounded:
        args.append("--bounded")
    return args


@job_app.command()
def run(
    config: RequiredConfigOption = None,
    parallelism: ParallelismOption = None,
    from_checkpoint: FromCheckpointOption = None,
    starting_offsets: OffsetsOption = None,
    delivery: DeliveryOption = None,
    bounded: Annotated[
        bool,
        typer.Option(
            help="Stop at the end offsets found at start, closing every open bar (finite runs)."
        ),
    ] = False,
    log_format: LogFormatOption = "text",
) -> None:
    """Run the job here, on a local Flink MiniCluster, until stopped (Ctrl-C or SIGTERM) or, with
    --bounded, to the end of the input. The first run fetches the Kafka connector jar with Maven.
    While the Kafka brokers are unreachable it waits and says so on stderr (once, then once a
    minute, then when they are back), and Flink restarts the job from its last checkpoint when
    its Kafka clients give up. Flink's own log: $FLINK_LOG_DIR (default: site-packages/pyflink/log).
    """
    from streamfolio.config import load_config
    from streamfolio.flink import driver, gateway
    from streamfolio.flink.job import main
    from streamfolio.kafka.outage import broker_watch
    from streamfolio.observability.logs import use_log_format

    watch = broker_watch("job")
    with command_errors():
        _choice(starting_offsets, ("latest", "earliest"), "--starting-offsets")
        _choice(delivery, ("at-least-once", "exactly-once"), "--delivery")
        settings = load_config(config)
    args = _job_args(config, parallelism, from_checkpoint, starting_offsets, delivery, bounded)
    driver.outages_to_stderr()
    with command_errors():
        use_log_format(log_format)  # after: the outage lines' own handler writes JSON too
    gateway.track_gateway()
    # In this process, not in the job graph: the job's own clients are Java and log elsewhere.
    probe = driver.BrokerProbe(driver.metadata_probe(settings), watch).start()
    interrupted = False
    try:
        with stop_signals(), command_errors():
            main(args)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        probe.stop()
        gateway.stop_gateway()
    if interrupted:
        typer.echo(
            "stopped; checkpoints are retained (resume with --from-checkpoint latest)", err=True
        )


JobManagerOption = Annotated[
    str | None,
    typer.Option(
        "--jobmanager",
        "-m",
        help="HOST:PORT of a session cluster's REST API (default: the local cluster of "
        "`streamfolio flink up`, localhost:flink.cluster.rest_port).",
        show_default=False,
    ),
]


@job_app.command()
def submit(
    config: RequiredConfigOption = None,
    parallelism: ParallelismOption = None,
    from_checkpoint: FromCheckpointOption = None,
    starting_offsets: OffsetsOption = None,
    delivery: DeliveryOption = None,
    jobmanager: JobManagerOption = None,
    target: Annotated[
        str | None,
        typer.Option(help="flink run --target: remote, kubernetes-application, yarn-session..."),
    ] = None,
    python: Annotated[
        str,
        typer.Option(help="Python with streamfolio and apache-flink on the cluster's machines."),
    ] = sys.executable,
    execute: Annotated[
        bool, typer.Option("--execute", help="Run the command; print the job id.")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="With --execute: stay with the job, printing its state at each change; exit 1 "
            "with the reason once it ends (FAILED, CANCELED, FINISHED); Ctrl-C or SIGTERM "
            "cancels it (its checkpoints stay) and exits 0. What `streamfolio demo --flink "
            "cluster` runs as its job.",
        ),
    ] = False,
) -> None:
    """Print the `flink run` command that submits the job to a Flink cluster, by default the
    local one of `streamfolio flink up`; with --execute, run it (detached) and print the job's
    id; with --follow too, stay with the job until it ends or is stopped. Resume with
    --from-checkpoint PATH (a savepoint of `job stop --savepoint`, or a retained checkpoint) or
    'latest'. The cluster's machines need the same Python environment and the config file at
    the same path (docs/flink.md).
    """
    from streamfolio.flink.cluster.local import LocalFlinkCluster
    from streamfolio.flink.cluster.submit import run_submit
    from streamfolio.flink.connectors import job_jars

    with command_errors():
        _choice(starting_offsets, ("latest", "earliest"), "--starting-offsets")
        _choice(delivery, ("at-least-once", "exactly-once"), "--delivery")
        _check_follow(follow, execute, target, jobmanager)
        jars = job_jars()
    args = _job_args(config, parallelism, from_checkpoint, starting_offsets, delivery, False)
    local = None
    if target is None and jobmanager is None:
        with command_errors():
            local = LocalFlinkCluster(load_settings(config), progress=say)
        command = local.submit_command(args, python=python, jars=jars)
    else:
        command = submit_command(
            args, jars=jars, python=python, target=target, jobmanager=jobmanager
        )
    if not execute:
        typer.echo(shlex.join(command))
        return

    def run() -> str:
        if local is not None:
            return local.submit(args, python=python, jars=jars)
        say("submitting: " + shlex.join(command))
        return run_submit(command, os.environ, Path("flink-run.log").resolve(), timeout_s=300.0)

    if follow:
        raise typer.Exit(_submit_and_follow(run, _rest(config, jobmanager)))
    with command_errors():
        job_id = run()
    say(f"submitted job {job_id}; `streamfolio job status` shows its state")
    typer.echo(job_id)


def _check_follow(follow: bool, execute: bool, target: str | None, jobmanager: str | None) -> None:
    if not follow:
        return
    if not execute:
        raise UsageError(
            "--follow follows the job that --execute submits (fix: add --execute, or drop --follow)"
        )
    if target is not None and jobmanager is None:
        raise UsageError(
            f"--follow asks the cluster's REST API, which --target {target} does not name (fix: "
            "add --jobmanager HOST:PORT, or drop --follow)"
        )


def _submit_and_follow(submit_job: Callable[[], str], rest: FlinkRest) -> int:
    """Submit with ``submit_job``, print the job id, follow the job
    (:func:`~streamfolio.flink.cluster.follow.follow_job`); the exit code. A stop while
    submitting cancels what the interrupted ``flink run`` may have submitted."""
    from streamfolio.flink.cluster.follow import (
        StatusFile,
        cancel_job,
        cancel_submitted,
        failure_reason,
        follow_job,
    )

    status = StatusFile.from_environment()
    started_ms = int(time.time() * 1000)
    with stop_signals():
        try:
            status.write("submitting to the Flink cluster")
            with command_errors():
                job_id = submit_job()
        except KeyboardInterrupt:
            cancel_submitted(rest, started_ms, say)
            return 0
        try:
            say(f"submitted job {job_id}; following it (Ctrl-C or SIGTERM cancels it)")
            typer.echo(job_id)
        except KeyboardInterrupt:
            cancel_job(job_id, rest, say)
            return 0
        return follow_job(
            job_id,
            rest,
            say,
            reason=lambda job: failure_reason(rest.base_url, job),
            status=status,
        )


def _rest(config: Path | None, jobmanager: str | None) -> FlinkRest:
    """The REST API of ``--jobmanager``, else of the local cluster of ``config``."""
    from streamfolio.flink.cluster.local import LocalFlinkCluster
    from streamfolio.flink.cluster.rest import FlinkRest

    if jobmanager is not None:
        return FlinkRest(jobmanager if "://" in jobmanager else f"http://{jobmanager}")
    return LocalFlinkCluster(load_settings(config)).rest


@job_app.command()
def status(
    config: ConfigOption = None,
    jobmanager: JobManagerOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """The jobs on the cluster (running and ended), newest first: id, state, name."""
    from streamfolio.flink.cluster.cli import job_lines

    with command_errors():
        jobs = _rest(config, jobmanager).jobs()
    if as_json:
        typer.echo(json.dumps([j.to_dict() for j in jobs], indent=2))
        return
    for line in job_lines(jobs):
        typer.echo(line)


@job_app.command()
def stop(
    job_id: Annotated[str, typer.Argument(help="The job's id (`streamfolio job status`).")],
    directory: Annotated[
        str | None,
        typer.Argument(
            help="With --savepoint: the folder for it (default: the cluster's "
            "execution.checkpointing.savepoint-dir, <flink.cluster.data_dir>/savepoints "
            "for the local cluster).",
            show_default=False,
        ),
    ] = None,
    savepoint: Annotated[
        bool,
        typer.Option(
            "--savepoint",
            help="Stop with a savepoint and print its path (else: cancel; the job's retained "
            "checkpoints remain).",
        ),
    ] = False,
    config: ConfigOption = None,
    jobmanager: JobManagerOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the savepoint.", min=1)
    ] = 300.0,
) -> None:
    """Stop a job on the cluster: `job stop ID --savepoint [DIR]` takes a savepoint, waits
    for it, and prints its path (resume with `job submit --execute --from-checkpoint PATH`);
    without --savepoint the job is cancelled."""
    from streamfolio.flink.cluster.rest import local_path

    with command_errors():
        if directory is not None and not savepoint:
            raise UsageError(f"a folder ({directory}) is only taken with --savepoint")
        rest = _rest(config, jobmanager)
        if not savepoint:
            rest.cancel(job_id)
            say(f"cancelled job {job_id}; its last checkpoint stays (--from-checkpoint latest)")
            return
        target = None
        if directory is not None:
            target = directory if "://" in directory else Path(directory).resolve().as_uri()
        say(f"stopping job {job_id} with a savepoint")
        path = rest.stop_with_savepoint(job_id, target, timeout_s=timeout)
    say("resume with: streamfolio job submit --execute --from-checkpoint " + local_path(path))
    typer.echo(path)


@job_app.command()
def state(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="A checkpoint folder (<flink.checkpoint_dir>/<job id>/chk-N), a savepoint "
            "folder, or 'latest': the newest complete checkpoint retained under "
            "flink.checkpoint_dir of --config.",
            show_default=False,
        ),
    ],
    portfolio: Annotated[
        str | None,
        typer.Option("--portfolio", "-p", help="Only this portfolio.", show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    config: ConfigOption = None,
) -> None:
    """What the job keeps per portfolio in a checkpoint: its shard, its definition (configured,
    defined by a message, removed), whether it is seeded, control messages and bars waiting,
    and where its monitor is (a panel, its own state, none) with its statistics. Reads the
    state with Flink's State Processor API in a JVM of its own (built with Maven on first use).
    Thread mode only: the state of a job whose Python functions ran in process mode
    (parallelism above 1) is not readable (docs/flink.md)."""
    from streamfolio.flink.checkpoint_state import (
        checkpoint_folder,
        portfolio_views,
        read_entries,
        report_document,
        report_lines,
    )

    with command_errors():
        settings = load_settings(config)
        folder = checkpoint_folder(checkpoint, Path(settings.flink.checkpoint_dir).resolve())
        say(f"reading the keyed state of {folder}")
        configured = {p.id: list(p.tickers) for p in settings.portfolios}
        views = portfolio_views(read_entries(folder, progress=say), configured)
        if portfolio is not None:
            held = [v.portfolio_id for v in views]
            views = [v for v in views if v.portfolio_id == portfolio]
            if not views:
                raise UsageError(
                    f"no portfolio {portfolio!r} in the state of {folder} (it holds "
                    f"{', '.join(held) or 'none'}): a portfolio the job never heard of leaves "
                    "none"
                )
    if as_json:
        typer.echo(json.dumps(report_document(views, folder), indent=2))
        return
    for line in report_lines(views, folder):
        typer.echo(line)
