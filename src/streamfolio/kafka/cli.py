"""``streamfolio kafka up | down | status``: the local development broker, or a local cluster.

One PLAINTEXT broker by default; a multi-broker KRaft cluster when ``kafka.local.brokers`` (or
``up --brokers``) is above 1 or ``kafka.security.protocol`` is not PLAINTEXT, secured with SCRAM,
TLS and ACLs per component (docs/kafka-cluster.md). Registered by the main CLI with
``app.add_typer(kafka_app)``. Progress goes to stderr, results to stdout (``status --json``
prints one JSON document).
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
    from streamfolio.config import Settings
    from streamfolio.kafka.admin.report import GroupLag
    from streamfolio.kafka.local.broker import LocalKafka, LocalStatus
    from streamfolio.kafka.local.cluster import LocalCluster
    from streamfolio.kafka.local.cluster_status import ClusterStatus

kafka_app = typer.Typer(
    name="kafka",
    help=(
        "Real Kafka 4.x brokers on this machine (Java 17+; the first `up` fetches the jars with "
        "Maven): one development broker, or a secured multi-broker cluster. Settings: "
        "kafka.local and kafka.security in the config."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

BrokersOption = Annotated[
    int | None,
    typer.Option(
        "--brokers",
        help="Nodes of the local cluster (default: kafka.local.brokers); above 1, a cluster.",
        min=1,
        max=9,
        show_default=False,
    ),
]


def _load(
    config: Path | None, brokers: int | None = None
) -> tuple[Settings, LocalKafka | LocalCluster]:
    from streamfolio.kafka.local.broker import LocalKafka
    from streamfolio.kafka.local.cluster import LocalCluster, wants_cluster
    from streamfolio.kafka.local.install import repo_root

    settings = load_settings(config)
    root = repo_root()
    single = LocalKafka(settings.kafka, root, progress=_say)
    nodes = wants_cluster(settings.kafka, single.data_dir, brokers)
    if nodes is None:
        return settings, single
    return settings, LocalCluster(settings, root, brokers=nodes, progress=_say)


@kafka_app.command()
def up(
    config: ConfigOption = None,
    brokers: BrokersOption = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for the brokers to answer (default: 60, a cluster 120).",
            min=1,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start the broker or cluster (fetching jars, formatting storage and, secured, making
    certificates, passwords, users and ACLs on first use) and create the configured topics.
    Whatever already runs is kept; only what is missing is started or created."""
    from streamfolio.kafka.admin.specs import topic_specs
    from streamfolio.kafka.local.broker import LocalKafka

    with command_errors():
        settings, kafka = _load(config, brokers)
        specs = topic_specs(settings)
        if isinstance(kafka, LocalKafka):
            result = kafka.up(specs, timeout=timeout or 60.0)
            state = "started" if result.started else "already running"
            bootstrap = result.bootstrap
            typer.echo(f"kafka {state}: {bootstrap} (pid {result.pid}), data {kafka.data_dir}")
        else:
            cluster = kafka.up(specs, timeout=timeout or 120.0)
            state = (
                f"started node(s) {list(cluster.started)}" if cluster.started else "already running"
            )
            bootstrap = cluster.bootstrap
            secured = "SASL/TLS, ACLs" if kafka.secured else "PLAINTEXT"
            typer.echo(
                f"kafka cluster {state}: {bootstrap} ({len(kafka.nodes)} nodes, {secured}), "
                f"data {kafka.data_dir}"
            )
    if set(settings.kafka.bootstrap_servers.split(",")) != set(bootstrap.split(",")):
        _say(
            f"note: kafka.bootstrap_servers is {settings.kafka.bootstrap_servers}, not "
            f"{bootstrap}; the services will not use these brokers"
        )


@kafka_app.command()
def down(
    config: ConfigOption = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait after SIGTERM before SIGKILL.", min=0)
    ] = 30.0,
) -> None:
    """Stop the broker, or every node of the cluster, cleanly (SIGTERM, then SIGKILL after
    --timeout). Keeps the data."""
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
    _print_groups(report.groups)


def _print_groups(groups: Sequence[GroupLag]) -> None:
    """Each consumer group's state and lag, total and per partition."""
    if not groups:
        return
    typer.echo("")
    width = max(len("group"), *(len(g.group_id) for g in groups))
    typer.echo(f"{'group':<{width}}  {'state':<18}  {'lag':>6}  lag by partition")
    for group in groups:
        parts = " ".join(
            f"{p.topic}[{p.partition}]={'-' if p.lag is None else p.lag}" for p in group.partitions
        )
        typer.echo(f"{group.group_id:<{width}}  {group.state:<18}  {group.lag:>6}  {parts}")


def _print_cluster(status: ClusterStatus) -> None:
    typer.echo(
        f"kafka cluster: {len(status.nodes)} nodes at {status.bootstrap}, "
        f"{'secured (SASL/TLS, ACLs)' if status.secured else 'PLAINTEXT'}, data {status.data_dir}"
    )
    typer.echo(f"{'node':>4}  {'listener':<16}  {'pid':>7}  state")
    for node in status.nodes:
        state = (
            "stopped"
            if not node.running
            else "running" + ("" if node.registered else " (not a registered broker yet)")
        )
        pid = str(node.pid) if node.pid is not None else "-"
        typer.echo(f"{node.index:>4}  {node.listener:<16}  {pid:>7}  {state}")
    if status.error:
        typer.echo(f"error: {status.error}")
    if status.partitions:
        typer.echo("")
        width = max(len("topic"), *(len(p.topic) for p in status.partitions))
        typer.echo(f"{'topic':<{width}}  part  leader  replicas  isr")
        for p in status.partitions:
            flag = "  under-replicated" if p.under_replicated else ""
            replicas = ",".join(map(str, p.replicas))
            isr = ",".join(map(str, p.isr))
            typer.echo(
                f"{p.topic:<{width}}  {p.partition:>4}  {p.leader:>6}  {replicas:<8}  {isr}{flag}"
            )
        lagging = len(status.under_replicated)
        typer.echo(f"{lagging} of {len(status.partitions)} partitions under-replicated")
    if status.acls is not None:
        typer.echo("")
        if not status.acls:
            typer.echo("no ACLs")
        for principal, lines in status.acls.items():
            typer.echo(f"{principal}:")
            for line in lines:
                typer.echo(f"  {line}")
    _print_groups(status.groups)


@kafka_app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Whether the broker runs, with its topics, end offsets and group lag; for a cluster,
    every node, each partition's leader, replicas and ISR, and the ACLs per principal."""
    from streamfolio.kafka.local.broker import LocalStatus

    with command_errors():
        _, kafka = _load(config)
        found = kafka.status()
    if as_json:
        typer.echo(json.dumps(found.to_dict(), indent=2))
    elif isinstance(found, LocalStatus):
        _print_status(found)
    else:
        _print_cluster(found)
