"""``streamfolio topic tail | produce``: look inside the pipeline's topics as JSON lines, decoded
and encoded with each topic's schema."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, parse_time, say
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


def _event_time(text: str | None, option: str) -> int | None:
    """``--since``/``--until``: epoch milliseconds, or an ISO-8601 time (``Z`` for UTC).

    >>> _event_time("1750000000000", "--since"), _event_time("2025-06-15T15:06:40Z", "--until")
    (1750000000000, 1750000000000)
    """
    if text is None:
        return None
    if text.strip().lstrip("-").isdigit():
        return int(text)
    moment = parse_time(text, option)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


@topic_app.command("tail")
def topic_tail(
    name: Annotated[
        str, typer.Argument(help="Topic name or role (prices, weights, metrics, ...).")
    ],
    config: ConfigOption = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    until_end: Annotated[
        bool,
        typer.Option(
            "--until-end",
            help="Read up to the end offsets found at start, then exit 0 (also on a topic "
            "still being written).",
        ),
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", min=0, help="Stop after this many messages.")
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            min=0, help="Stop after this many seconds without a message (not with --until-end)."
        ),
    ] = 10.0,
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", min=0, help="Only this partition; repeatable."),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Only messages with this key.")] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only messages with an event time at or after this (ISO-8601 or epoch ms); "
            "each partition starts at its first message stamped then.",
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="Only messages with an event time at or before this."),
    ] = None,
    count: Annotated[
        bool, typer.Option("--count", help="Print only how many messages matched.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (the only format).")
    ] = True,
) -> None:
    """Decode each message with the topic's schema; print JSON lines with key, partition, offset.

    Heartbeats on the prices topic print as {"heartbeat": {"time": ..., "source": ...}}. The
    event time of --since/--until is a record's event_time or timestamp, a heartbeat's time.
    `--from-beginning --until-end` reads everything up to now and exits, like kcat -e.
    """
    from streamfolio.kafka.tools import TailFilter, tail

    with command_errors(interrupted=130):
        since_ms, until_ms = _event_time(since, "--since"), _event_time(until, "--until")
        if since_ms is not None and until_ms is not None and since_ms > until_ms:
            raise UsageError(f"--since {since} is after --until {until}")
        settings = load_settings(config)
        _known_topic(settings, name)
        only = TailFilter(
            partitions=frozenset(partition) if partition else None,
            key=key,
            since_ms=since_ms,
            until_ms=until_ms,
        )
        tail(
            settings,
            name,
            from_beginning=from_beginning,
            max_records=max_records,
            timeout_s=timeout,
            emit=typer.echo,
            until_end=until_end,
            only=only,
            count_only=count,
        )


@topic_app.command("produce")
def topic_produce(
    name: Annotated[str, typer.Argument(help="Topic name or role.")],
    config: ConfigOption = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            exists=True,
            dir_okay=False,
            help="Read the JSON lines from this file (default: stdin).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Read JSON lines (the only format).")
    ] = True,
) -> None:
    """Encode JSON lines from stdin (or --file) with the topic's schema; produce them keyed as
    it expects, and report how many went to each partition.

    On the prices topic, {"heartbeat": {"time": 1750000000000, "source": "manual"}} writes a
    heartbeat on every partition, or on one with "partition": N.
    """
    from streamfolio.kafka.tools import produce_lines

    with command_errors():
        settings = load_settings(config)
        _known_topic(settings, name)
        if file is None:
            produced = produce_lines(settings, name, sys.stdin)
        else:
            with file.open(encoding="utf-8") as lines:
                produced = produce_lines(settings, name, lines, source=str(file))
    say(produced.line())
