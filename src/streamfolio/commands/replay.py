"""``streamfolio replay``: the analytics over a tick file, offline, as the reference semantics of
the streaming job; a file with a ``partition`` column is replayed as read from those partitions."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from streamfolio.cli_support import ConfigOption, command_errors, load_settings, one_of, say

if TYPE_CHECKING:
    from collections.abc import Iterator

    from streamfolio.config import Settings
    from streamfolio.replay import ReplayEvent, Tick

__all__ = ["replay"]


def replay(
    prices: Annotated[
        Path,
        typer.Option(
            help="Ticks, CSV `time,ticker,price[,volume][,partition]`, ISO-8601 times; "
            "`partition`: the prices topic's partition each was read from (default 0)."
        ),
    ],
    config: ConfigOption = None,
    state: Annotated[
        Path | None,
        typer.Option(help="Initial state from `streamfolio init` (default: computed now)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output file (default: stdout).")] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="jsonl (every event) or csv (metrics and weights).")
    ] = "jsonl",
    rebalance: Annotated[
        bool, typer.Option(help="Run the rebalance policy and apply its weights.")
    ] = True,
) -> None:
    """Run the analytics over a tick file offline: the reference semantics of the streaming job."""
    from streamfolio.state import run_replay

    with command_errors():
        one_of(output_format, ("jsonl", "csv"), "--format")
        settings = load_settings(config)
        known = {t for p in settings.portfolios for t in p.tickers}
        partitioned = _partitioned_ticks(prices, known)
        if partitioned is None:
            events = run_replay(
                settings, prices=prices, state_path=state, rebalance=rebalance, progress=say
            )
        else:
            events = _replay_partitions(settings, partitioned, state, rebalance)
        stream: TextIO = sys.stdout if out is None else out.open("w", newline="")
        try:
            counts = _write_events(events, stream, output_format)
        finally:
            if out is not None:
                stream.close()
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "no events"
    say(f"replay done: {summary}")


def _partitioned_ticks(path: Path, known: set[str]) -> list[Tick] | None:
    """The ticks of a tick file with a ``partition`` column, in file order; None without one.

    The other columns are read by :func:`~streamfolio.feeds.history.read_history` (same times,
    checks and messages) from a copy without the ``partition`` column.
    """
    import tempfile

    from streamfolio.errors import DataError
    from streamfolio.feeds.history import read_history
    from streamfolio.replay import Tick

    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as error:
        raise DataError(f"cannot read the tick file: {error}", str(path)) from None
    with handle, tempfile.TemporaryDirectory() as tmp:
        reader = csv.reader(handle)
        header = next(reader, None)
        names = [h.strip() for h in header or []]
        if "partition" not in names:
            return None
        column = names.index("partition")
        partitions: list[int] = []
        copy = Path(tmp) / path.name
        with copy.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(names[:column] + names[column + 1 :])
            for row in reader:
                # Blank rows stay, so that read_history's line numbers are this file's.
                if row and len(row) != len(names):
                    where = f"{path}:{reader.line_num}"
                    raise DataError(f"expected {len(names)} fields, got {len(row)}", where)
                if row:
                    text = row[column].strip()
                    if not text.isdigit():
                        where = f"{path}:{reader.line_num}"
                        raise DataError(f"bad partition {text!r}: not a number >= 0", where)
                    partitions.append(int(text))
                writer.writerow(row[:column] + row[column + 1 :])
        try:
            history = read_history(copy, known_tickers=known, ticks=True)
        except DataError as error:
            here = None if error.where is None else error.where.replace(str(copy), str(path))
            raise DataError(error.reason, here) from None
    return [
        Tick(int(t), str(s), float(p), partition)
        for t, s, p, partition in zip(
            history.times_ms, history.tickers, history.prices, partitions, strict=True
        )
    ]


def _replay_partitions(
    settings: Settings, ticks: list[Tick], state: Path | None, rebalance: bool
) -> Iterator[ReplayEvent]:
    """``run_replay`` for ticks read from several partitions: the engine waits for each."""
    from streamfolio.errors import DataError
    from streamfolio.portfolios import policy_settings, portfolio_spec
    from streamfolio.replay import ReplayEngine, ReplayPortfolio
    from streamfolio.state import initial_state, load_state

    data = load_state(state) if state else initial_state(settings, progress=say)
    by_id = {p["portfolio_id"]: p for p in data["portfolios"]}
    portfolios = []
    for portfolio in settings.portfolios:
        entry = by_id.get(portfolio.id)
        if entry is None:
            raise DataError(
                f"initial state has no portfolio {portfolio.id!r}; run `streamfolio init` again"
            )
        portfolios.append(
            ReplayPortfolio(
                spec=portfolio_spec(portfolio, settings.exchange),
                initial_stats=entry["stats"],
                initial_weights=entry["weights"]["weights"],
                policy=policy_settings(portfolio, settings.exchange) if rebalance else None,
            )
        )
    engine = ReplayEngine(
        portfolios,
        max_out_of_orderness_ms=settings.flink.max_out_of_orderness_ms,
        max_future_skew_ms=settings.validation.max_future_skew_ms,
        # The file's partitions are all there is: a partition it does not name holds nothing.
        partitions={tick.partition for tick in ticks} or {0},
    )
    yield from engine.run(ticks)


_CSV_COLUMNS = (
    "kind",
    "portfolio_id",
    "timestamp",
    "expected_return",
    "risk",
    "sharpe",
    "count",
    "weights",
)


def _write_events(events: Any, stream: TextIO, output_format: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    writer = csv.writer(stream) if output_format == "csv" else None
    if writer is not None:
        writer.writerow(_CSV_COLUMNS)
    event: ReplayEvent
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
        if writer is None:
            stream.write(
                json.dumps({"type": event.kind, "key": event.key, **event.record}, allow_nan=True)
                + "\n"
            )
        elif event.kind == "metrics":
            r = event.record
            writer.writerow(
                [
                    "metrics",
                    event.key,
                    r["timestamp"],
                    r["expectedReturn"],
                    r["risk"],
                    r["sharpRatio"],
                    r["count"],
                    json.dumps(r["weights"]),
                ]
            )
        elif event.kind == "weights":
            r = event.record
            writer.writerow(
                ["weights", event.key, r["timestamp"], "", "", "", "", json.dumps(r["weights"])]
            )
    return counts
