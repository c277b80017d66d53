"""``streamfolio portfolio add | update | remove | list | show``: portfolios as data, on the
compacted portfolios topic, while the job, the rebalancer, the store and the dashboard run.

A FILE holds one portfolio entry as under ``portfolios:`` in a configuration (a mapping), a
list of them, or a mapping with a ``portfolios`` list; the configuration's ``defaults`` are
merged in and it is validated as the configuration is, with the same messages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, parse_time, say
from streamfolio.errors import UsageError

if TYPE_CHECKING:
    from streamfolio.config import Settings

__all__ = ["portfolio_app"]

portfolio_app = typer.Typer(
    name="portfolio",
    help="Add, change, remove and list portfolios while everything runs (the portfolios topic).",
    no_args_is_help=True,
)

FileArgument = Annotated[
    Path,
    typer.Argument(
        exists=True,
        dir_okay=False,
        help="YAML: one portfolio entry as in a configuration, a list of them, or "
        "{portfolios: [...]}.",
    ),
]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Event time it takes effect: ISO-8601 (no offset: the exchange's local time) or "
        "epoch milliseconds. Default: now.",
    ),
]
HistoryOption = Annotated[
    Path | None,
    typer.Option(help="Daily closes for the initial statistics (default: bundled CSE history)."),
]


def _at_ms(settings: Settings, at: str | None) -> int:
    if at is None:
        return int(time.time() * 1000)
    text = at.strip()
    if text.isdigit():
        return int(text)
    moment = parse_time(text, "--at")
    if moment.tzinfo is None:
        from zoneinfo import ZoneInfo

        moment = moment.replace(tzinfo=ZoneInfo(settings.exchange.timezone))
    return int(moment.timestamp() * 1000)


def _entries(file: Path) -> list[dict[str, Any]]:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UsageError(f"FILE: cannot read {file}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("portfolios"), list):
        data = data["portfolios"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise UsageError(
            f"FILE: {file} holds no portfolio entry (fix: a mapping with id and tickers, a list "
            "of them, or {portfolios: [...]})"
        )
    return data


def _publish(
    file: Path, config: Path | None, at: str | None, history: Path | None, *, adding: bool
) -> None:
    from streamfolio.portfolio_changes import apply_changes, plan_changes
    from streamfolio.portfolios import portfolios_from_entries

    settings = load_settings(config)
    portfolios = portfolios_from_entries(_entries(file), settings, base_dir=file.parent)
    changes = plan_changes(settings, portfolios, _at_ms(settings, at), adding=adding)
    apply_changes(settings, changes, history=history, progress=say)


@portfolio_app.command("add")
def portfolio_add(
    file: FileArgument,
    config: ConfigOption = None,
    at: AtOption = None,
    history: HistoryOption = None,
) -> None:
    """Add the portfolios of FILE: their definitions, initial statistics and weights."""
    with command_errors():
        _publish(file, config, at, history, adding=True)


@portfolio_app.command("update")
def portfolio_update(
    file: FileArgument,
    config: ConfigOption = None,
    at: AtOption = None,
    history: HistoryOption = None,
) -> None:
    """Change portfolios: new tickers, bar size or estimator start them again from new initial
    statistics; other changes apply from their next metrics."""
    with command_errors():
        _publish(file, config, at, history, adding=False)


@portfolio_app.command("remove")
def portfolio_remove(
    portfolio_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Portfolio ids.")],
    config: ConfigOption = None,
    at: AtOption = None,
) -> None:
    """Remove portfolios: nothing more is computed or decided for them after the time."""
    from streamfolio.portfolio_changes import remove_portfolios

    with command_errors():
        settings = load_settings(config)
        remove_portfolios(settings, portfolio_ids, _at_ms(settings, at), progress=say)


@portfolio_app.command("list")
def portfolio_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The portfolios in force: the configured ones as the portfolios topic changed them."""
    from streamfolio.kafka.definitions import read_topic

    with command_errors():
        settings = load_settings(config)
        on_topic, removed = read_topic(settings)
        rows: list[tuple[str, list[str], int, str | None, int | None, str]] = [
            (p.id, list(p.tickers), p.bar_seconds, p.owner, None, "configuration")
            for p in settings.portfolios
            if p.id not in on_topic and p.id not in removed
        ]
        rows += [
            (d.portfolio_id, list(d.tickers), d.bar_seconds, d.owner, d.timestamp, "topic")
            for d in on_topic.values()
        ]
        for pid, tickers, bar, owner, since, source in sorted(rows):
            if as_json:
                line = {
                    "id": pid,
                    "tickers": tickers,
                    "bar_seconds": bar,
                    "owner": owner,
                    "since_ms": since,
                    "from": source,
                }
                typer.echo(json.dumps(line))
            else:
                when = "" if since is None else f" since {_iso(since)}"
                who = f" ({owner})" if owner else ""
                typer.echo(f"{pid}{who}: {len(tickers)} tickers, {bar} s bars, {source}{when}")


@portfolio_app.command("show")
def portfolio_show(
    portfolio_id: Annotated[str, typer.Argument(metavar="ID", help="Portfolio id.")],
    config: ConfigOption = None,
) -> None:
    """One portfolio's definition in force, as JSON (the topic's record, or the configured
    portfolio as it would be published)."""
    from streamfolio.kafka.definitions import read_topic
    from streamfolio.portfolios import definition_of

    with command_errors():
        settings = load_settings(config)
        on_topic, removed = read_topic(settings)
        definition = on_topic.get(portfolio_id)
        if definition is None and portfolio_id not in removed:
            configured = {p.id: p for p in settings.portfolios}.get(portfolio_id)
            if configured is not None:
                definition = definition_of(configured, 0)
        if definition is None:
            raise UsageError(
                f"ID: no portfolio {portfolio_id!r} is in force "
                "(fix: see `streamfolio portfolio list`)"
            )
        typer.echo(json.dumps(definition.to_record(), indent=2))


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")
