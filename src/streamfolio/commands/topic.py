"""``streamfolio topic tail | produce``: look inside the pipeline's topics as JSON lines, decoded
and encoded with each topic's schema."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, say
from streamfolio.errors import UsageError

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = ["topic_app"]

topic_app = typer.Typer(
    name="topic", help="Look inside the pipeline's topics as JSON lines.", no_args_is_help=True
)


def _known_topic(settings: Settings, name: str) -> None:
    """Refuse a NAME that is neither a configured topic nor a role."""
    from streamfolio.kafka.topics import contract_by_name

    try:
        contract_by_name(settings, name)
    except KeyError as error:
        raise UsageError(f"NAME: {error.args[0]}") from None


@topic_app.command("tail")
def topic_tail(
    name: Annotated[
        str, typer.Argument(help="Topic name or role (prices, weights, metrics, ...).")
    ],
    config: ConfigOption = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", min=0, help="Stop after this many messages.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0, help="Stop after this many seconds without a message.")
    ] = 10.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (the only format).")
    ] = True,
) -> None:
    """Decode each message with the topic's schema; print JSON lines with key, partition, offset.

    Heartbeats on the prices topic print as {"heartbeat": {"time": ..., "source": ...}}.
    """
    from streamfolio.kafka.tools import tail

    with command_errors(interrupted=130):
        settings = load_settings(config)
        _known_topic(settings, name)
        tail(
            settings,
            name,
            from_beginning=from_beginning,
            max_records=max_records,
            timeout_s=timeout,
            emit=typer.echo,
        )


@topic_app.command("produce")
def topic_produce(
    name: Annotated[str, typer.Argument(help="Topic name or role.")],
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Read JSON lines from stdin (the only format).")
    ] = True,
) -> None:
    """Encode JSON lines from stdin with the topic's schema; produce them keyed as it expects.

    On the prices topic, {"heartbeat": {"time": 1750000000000, "source": "manual"}} writes a
    heartbeat on every partition, or on one with "partition": N.
    """
    from streamfolio.kafka.tools import produce

    with command_errors():
        settings = load_settings(config)
        _known_topic(settings, name)
        count = produce(settings, name, sys.stdin)
    say(f"produced {count} message(s) to {name}")
