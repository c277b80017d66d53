"""``streamfolio kafka up | down | status``: the local development broker.

Registered by the main CLI with ``app.add_typer(kafka_app)``. Progress goes to stderr, results
to stdout (``status --json`` prints one JSON document).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings
from streamfolio.cli_support import say as _say

if TYPE_CHECKING:
    from streamfolio.config import Settings
    from streamfolio.kafka.local.broker import LocalKafka, LocalStatus

kafka_app = typer.Typer(
    name="kafka",
    help=(
        "A real single-node Kafka 4.x broker on this machine (Java 17+; the first `up` fetches "
        "the jars with Maven). Settings: kafka.local in the config."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _load(config: Path | None) -> tuple[Settings, LocalKafka]:
    from streamfolio.kafka.local.broker import LocalKafka
    from streamfolio.kafka.local.install import repo_root

    settings = load_settings(config)
    return settings, LocalKafka(settings.kafka, repo_root(), progress=_say)


@kafka_app.command()
def up(
    config: ConfigOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the broker to answer.", min=1)
    ] = 60.0,
) -> None:
    """Start the broker (fetching jars and formatting storage on first use) and create the
    configured topics. If it already runs, only create missing topics."""
    from streamfolio.kafka.admin.specs import topic_specs

    with command_errors():
        settings, kafka = _load(config)
        result = kafka.up(topic_specs(settings), timeout=timeout)
    state = "started" if result.started else "already running"
    typer.echo(f"kafka {state}: {result.bootstrap} (pid {result.pid}), data {kafka.data_dir}")
    if settings.kafka.bootstrap_servers != result.bootstrap:
        _say(
            f"note: kafka.bootstrap_servers is {settings.kafka.bootstrap_servers}, not "
            f"{result.bootstrap}; the services will not use this broker"
        )


@kafka_app.command()
def down(
    config: ConfigOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.", min=0)
    ] = 30.0,
) -> None:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after --timeout). Keeps its data."""
    with command_errors():
        _, kafka = _load(config)
        stopped = kafka.down(timeout=timeout)
    typer.echo("kafka stopped" if stopped else "kafka was not running")


def _print_status(status: LocalStatus) -> None:
    if not status.running:
        typer.echo(f"kafka: not running (data {status.data_dir})")
        if status.answering:
            typer.echo(
                f"note: a broker not started from {status.data_dir} answers at {status.bootstrap}"
            )
        return
    where = f"{status.bootstrap} (pid {status.pid}), data {status.data_dir}"
    if status.report is None:
        typer.echo(f"kafka: running but not answering yet at {where}; log {status.log_file}")
        return
    typer.echo(f"kafka: running at {where}")
    report = status.report
    if not report.topics:
        typer.echo("no topics")
    else:
        width = max(len("topic"), *(len(t.name) for t in report.topics))
        typer.echo(f"{'topic':<{width}}  partitions  messages  end offsets")
        for topic in report.topics:
            ends = " ".join(str(o) for o in topic.end_offsets)
            typer.echo(
                f"{topic.name:<{width}}  {len(topic.partitions):>10}  {topic.messages:>8}  {ends}"
            )
    if report.groups:
        typer.echo("")
        width = max(len("group"), *(len(g.group_id) for g in report.groups))
        typer.echo(f"{'group':<{width}}  {'state':<18}  {'lag':>6}  lag by partition")
        for group in report.groups:
            parts = " ".join(
                f"{p.topic}[{p.partition}]={'-' if p.lag is None else p.lag}"
                for p in group.partitions
            )
            typer.echo(f"{group.group_id:<{width}}  {group.state:<18}  {group.lag:>6}  {parts}")


@kafka_app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Whether the broker runs; its topics, partitions, end offsets and consumer-group lag."""
    with command_errors():
        _, kafka = _load(config)
        found = kafka.status()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
    else:
        _print_status(found)
