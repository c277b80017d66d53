"""``streamfolio job run | submit``: the streaming job, locally or on a Flink cluster.

Registered by the main CLI with ``app.add_typer(job_app)``. ``run`` executes the job in this
process on a local Flink MiniCluster (until it is stopped, or to the end of the input with
``--bounded``); ``submit`` prints the ``flink run`` command for a real cluster, and runs it with
``--execute``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from streamfolio.cli_support import RequiredConfigOption, command_errors, one_of, stop_signals

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

    watch = broker_watch("job")
    with command_errors():
        _choice(starting_offsets, ("latest", "earliest"), "--starting-offsets")
        _choice(delivery, ("at-least-once", "exactly-once"), "--delivery")
        settings = load_config(config)
    args = _job_args(config, parallelism, from_checkpoint, starting_offsets, delivery, bounded)
    driver.outages_to_stderr()
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


def flink_binary() -> str:
    """``$FLINK_HOME/bin/flink`` if set, else the one shipped in the apache-flink wheel."""
    home = os.environ.get("FLINK_HOME")
    if home:
        return str(Path(home) / "bin" / "flink")
    import pyflink

    return str(Path(pyflink.__file__).parent / "bin" / "flink")


def submit_command(
    job_args: list[str],
    *,
    jars: list[Path],
    python: str,
    target: str | None,
    detached: bool,
) -> list[str]:
    """The ``flink run`` command line that submits the job to a cluster.

    >>> submit_command(["--config", "/etc/sf.yaml"], jars=[Path("/j/kafka.jar")],
    ...                python="/venv/bin/python", target=None, detached=True)[1:5]
    ['run', '--detached', '--jarfile', '/j/kafka.jar']
    """
    from streamfolio.flink import job

    command = [flink_binary(), "run"]
    if detached:
        command.append("--detached")
    if target:
        command += ["--target", target]
    for jar in jars:
        command += ["--jarfile", str(jar)]
    command += [
        "-pyexec",
        python,
        "-pyclientexec",
        python,
        "--python",
        str(Path(job.__file__).resolve()),
        *job_args,
    ]
    return command


@job_app.command()
def submit(
    config: RequiredConfigOption = None,
    parallelism: ParallelismOption = None,
    from_checkpoint: FromCheckpointOption = None,
    starting_offsets: OffsetsOption = None,
    delivery: DeliveryOption = None,
    target: Annotated[
        str | None,
        typer.Option(help="flink run --target: remote, kubernetes-application, yarn-session..."),
    ] = None,
    python: Annotated[
        str,
        typer.Option(help="Python with streamfolio and apache-flink on the cluster's machines."),
    ] = sys.executable,
    execute: Annotated[bool, typer.Option("--execute", help="Run the command.")] = False,
) -> None:
    """Print the `flink run` command that submits the job to a Flink cluster (or run it with
    --execute). The cluster's machines need the same Python environment (see docs/flink.md).
    """
    from streamfolio.flink.connectors import job_jars

    with command_errors():
        _choice(starting_offsets, ("latest", "earliest"), "--starting-offsets")
        _choice(delivery, ("at-least-once", "exactly-once"), "--delivery")
        jars = job_jars()
    args = _job_args(config, parallelism, from_checkpoint, starting_offsets, delivery, False)
    command = submit_command(args, jars=jars, python=python, target=target, detached=True)
    typer.echo(shlex.join(command))
    if execute:
        raise typer.Exit(subprocess.run(command, check=False).returncode)
