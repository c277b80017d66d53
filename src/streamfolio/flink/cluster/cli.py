"""``streamfolio flink up | down | status``: the local Flink session cluster.

Registered by the main CLI with ``app.add_typer(flink_app)``. Progress goes to stderr, results
to stdout (``status --json`` prints one JSON document). The job runs on it with ``streamfolio job
submit --execute`` (``streamfolio.flink.cli``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings
from streamfolio.cli_support import say as _say

if TYPE_CHECKING:
    from streamfolio.flink.cluster.local import LocalFlinkCluster
    from streamfolio.flink.cluster.rest import JobInfo
    from streamfolio.flink.cluster.status import ClusterStatus

flink_app = typer.Typer(
    name="flink",
    help=(
        "A local Flink standalone session cluster: one JobManager and N TaskManagers as "
        "separate JVMs (Java 17+), from the apache-flink wheel. Settings: flink.cluster in the "
        "config. Run the job on it with `streamfolio job submit --execute`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def local_cluster(
    config: Path | None, *, taskmanagers: int | None = None, slots: int | None = None
) -> LocalFlinkCluster:
    """The cluster of ``config``'s ``flink.cluster`` (progress to stderr)."""
    from streamfolio.flink.cluster.local import LocalFlinkCluster

    settings = load_settings(config)
    return LocalFlinkCluster(settings, taskmanagers=taskmanagers, slots=slots, progress=_say)


@flink_app.command()
def up(
    config: ConfigOption = None,
    taskmanagers: Annotated[
        int | None,
        typer.Option(
            "--taskmanagers",
            min=1,
            help="TaskManagers to run (default: flink.cluster.taskmanagers, 2).",
            show_default=False,
        ),
    ] = None,
    slots: Annotated[
        int | None,
        typer.Option(
            "--slots",
            min=1,
            help="Task slots per TaskManager (default: flink.cluster.slots, 1). Applies to "
            "TaskManagers started from a stopped cluster.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds to wait for the REST API and every TaskManager.", min=1),
    ] = 120.0,
) -> None:
    """Start the cluster: the JobManager, then TaskManagers, and wait until every TaskManager
    has registered. If it already runs, start only what is missing (a TaskManager that died is
    replaced by a new one)."""
    with command_errors():
        cluster = local_cluster(config, taskmanagers=taskmanagers, slots=slots)
        started = cluster.up(timeout_s=timeout)
        status = cluster.status()
    what = ", ".join(p.resource_id or p.role for p in started)
    state = f"started {what}" if started else "already running"
    count = len(status.taskmanagers)
    typer.echo(
        f"flink {state}: {cluster.rest_url} (JobManager pid {status.jobmanager_pid}, "
        f"{count} TaskManager(s)), data {cluster.layout.root}"
    )


@flink_app.command()
def down(
    config: ConfigOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds each process has to stop before it is killed.", min=0)
    ] = 15.0,
) -> None:
    """Stop every process of the cluster (running jobs stop too; their checkpoints stay)."""
    with command_errors():
        cluster = local_cluster(config)
        stopped = cluster.down(timeout_s=timeout)
    if stopped:
        names = ", ".join(f"{p.resource_id or p.role} ({p.pid})" for p in stopped)
        typer.echo(f"flink stopped: {names}")
    else:
        typer.echo("flink was not running")


@flink_app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """The JobManager, the TaskManagers (id, pid, slots, free slots) and the jobs (id, name,
    state), from the processes and the REST API."""
    with command_errors():
        found = local_cluster(config).status()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
        return
    for line in status_lines(found):
        typer.echo(line)


def status_lines(found: ClusterStatus) -> list[str]:
    """``status`` as text lines."""
    if not found.running:
        return [f"flink: not running (data {found.data_dir})"]
    if not found.answering:
        return [
            f"flink: JobManager pid {found.jobmanager_pid}, REST API not answering yet at "
            f"{found.rest_url}; logs {found.data_dir / 'log'}"
        ]
    lines = [
        f"flink {found.version}: JobManager pid {found.jobmanager_pid}, REST {found.rest_url}",
        "",
        f"{'taskmanager':<12}  {'pid':>7}  {'slots':>5}  {'free':>5}",
    ]
    for tm in found.taskmanagers:
        pid = str(tm.pid) if tm.pid is not None else "gone"
        slots = "-" if tm.slots is None else str(tm.slots)
        free = "-" if tm.free_slots is None else str(tm.free_slots)
        lines.append(f"{tm.id:<12}  {pid:>7}  {slots:>5}  {free:>5}")
    lines += ["", *job_lines(found.jobs)]
    return lines


def job_lines(jobs: Sequence[JobInfo]) -> list[str]:
    """Jobs as a table: id, state, name."""
    if not jobs:
        return ["no jobs"]
    lines = [f"{'job':<32}  {'state':<12}  name"]
    lines += [f"{j.id:<32}  {j.state:<12}  {j.name}" for j in jobs]
    return lines
