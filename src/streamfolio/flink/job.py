"""The streaming job, wired top to bottom as the data flows (PyFlink DataStream API).

::

    prices topic ──KafkaSource (record timestamp → per-partition watermarks)
        → DecodeTicks          decode + validate; one row per (tick, bar size)     ─┐ dead
        → key (ticker, bar)    CloseBars: bar closes, log returns; late ticks      ─┤ letters
        → fan-out to the portfolios holding the ticker at that bar size             │
    initial-stats topic ─┐                                                          │
    weights topic ───────┴→ DecodeControls                                         ─┤
        → key (portfolio)    PortfolioProcess: statistics & metrics in keyed state ─┘
        → updated-stats topic, metrics topic (keyed by portfolio id); dead-letter topic

Run locally with ``streamfolio job run`` (a MiniCluster in this process) or on a cluster with
``flink run --python .../streamfolio/flink/job.py`` (``streamfolio job submit`` prints the
command). ``main`` takes the same options as ``job run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streamfolio.config import Settings, load_config
from streamfolio.kafka.topics import contract
from streamfolio.portfolios import portfolio_spec

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, StreamExecutionEnvironment

    from streamfolio.core.portfolio import PortfolioSpec
    from streamfolio.flink.runtime import JobOptions
    from streamfolio.kafka.topics import Role
    from streamfolio.replay import ControlKind

__all__ = ["Routing", "build_pipeline", "main", "routing"]


@dataclass(frozen=True)
class Routing:
    """Where ticks and bars go, from the configured portfolios (membership is static)."""

    specs: dict[str, PortfolioSpec]
    bar_sizes: dict[str, tuple[int, ...]]
    """Ticker → the bar sizes (ms) of the portfolios holding it."""
    portfolios: dict[tuple[str, int], tuple[str, ...]]
    """(ticker, bar ms) → ids of the portfolios holding the ticker at that bar size."""


def routing(settings: Settings) -> Routing:
    """The routing tables of ``settings``' portfolios.

    >>> from streamfolio.config import example_config_path, load_config
    >>> r = routing(load_config(example_config_path(), environ={}))
    >>> r.bar_sizes["ATW"], r.portfolios[("ATW", 300_000)]
    ((60000, 300000), ('banks',))
    """
    specs = {p.id: portfolio_spec(p, settings.exchange) for p in settings.portfolios}
    portfolios: dict[tuple[str, int], list[str]] = {}
    for spec in specs.values():
        for ticker in spec.tickers:
            portfolios.setdefault((ticker, spec.bar_ms), []).append(spec.portfolio_id)
    bar_sizes: dict[str, list[int]] = {}
    for ticker, bar_ms in portfolios:
        bar_sizes.setdefault(ticker, []).append(bar_ms)
    return Routing(
        specs,
        {t: tuple(sorted(sizes)) for t, sizes in bar_sizes.items()},
        {key: tuple(ids) for key, ids in portfolios.items()},
    )


def build_pipeline(
    env: StreamExecutionEnvironment, settings: Settings, options: JobOptions | None = None
) -> None:
    """Add the job's sources, operators and sinks to ``env`` (run it with ``env.execute()``)."""
    from pyflink.common import Types
    from pyflink.table import StreamTableEnvironment

    from streamfolio.flink import operators as op
    from streamfolio.flink.connectors import KafkaTableSinks, kafka_source, watermark_strategy
    from streamfolio.flink.runtime import JobOptions

    options = options or JobOptions.from_settings(settings)
    route = routing(settings)
    topics = {role: contract(settings, role) for role in ("prices", "initial_stats", "weights")}
    watermarks = watermark_strategy(settings.flink)

    # 1. Prices: event time and watermarks come from the Kafka record timestamps, per partition.
    prices = env.from_source(
        kafka_source(
            settings, "prices", starting=options.starting_offsets, bounded=options.bounded
        ),
        watermarks,
        "prices",
    ).uid("source-prices")

    # 2. Decode and validate; unusable messages become dead letters (sent on with the ticks).
    ticks = (
        prices.process(
            op.DecodeTicks(route.bar_sizes, topics["prices"].schema, topics["prices"].name)
        )
        .name("decode ticks")
        .uid("decode-ticks")
    )

    # 3. Per (ticker, bar size): bar closes and log returns, fanned out to the portfolios;
    # late ticks become dead letters.
    bars = (
        ticks.key_by(op.tick_key, key_type=Types.STRING())
        .process(op.CloseBars(route.portfolios, topics["prices"].name))
        .name("close bars")
        .uid("close-bars")
    )

    # 4. Control messages: initial statistics and weights, keyed by portfolio id. They are read
    # from the start of their topics: they are the portfolios' configuration, not a feed.
    controls = []
    inputs: tuple[tuple[Role, ControlKind], ...] = (
        ("initial_stats", "stats"),
        ("weights", "weights"),
    )
    for role, kind in inputs:
        source = env.from_source(
            kafka_source(settings, role, starting="earliest", bounded=options.bounded),
            watermarks,
            role,
        ).uid(f"source-{role}")
        controls.append(
            source.process(
                op.DecodeControls(kind, topics[role].schema, list(route.specs), topics[role].name)
            )
            .name(f"decode {kind}")
            .uid(f"decode-{kind}")
        )

    # 5. Per portfolio: statistics and metrics in keyed state, bar by bar in event time.
    portfolios = (
        bars.connect(controls[0].union(controls[1]))
        .key_by(op.bar_row_key, op.control_row_key, key_type=Types.STRING())
        .process(
            op.PortfolioProcess(
                route.specs,
                {"stats": topics["initial_stats"].name, "weights": topics["weights"].name},
            ),
            output_type=op.keyed_bytes_type(),
        )
        .name("portfolio statistics")
        .uid("portfolio-statistics")
    )
    metrics = portfolios.get_side_output(op.metrics_tag())

    # 6. Sinks: statistics and metrics keyed by portfolio id; every dead letter to one topic.
    # (The per-tick functions pass theirs down to the portfolio operator: see DecodeTicks.)
    dead: DataStream = portfolios.get_side_output(op.dead_letter_tag()).union(
        *(c.get_side_output(op.dead_letter_tag()) for c in controls)
    )
    sinks = KafkaTableSinks(
        StreamTableEnvironment.create(env),
        settings,
        delivery=options.delivery,
        transactional_id_prefix=options.transactional_id_prefix,
    )
    sinks.add(portfolios, "updated_stats", keyed=True)
    sinks.add(metrics, "metrics", keyed=True)
    sinks.add(dead, "dead_letter", keyed=False)
    sinks.attach()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="streamfolio-job", description="Run the streamfolio streaming job."
    )
    parser.add_argument("--config", "-c", default=None, help="YAML configuration")
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument(
        "--from-checkpoint",
        default=None,
        help="a checkpoint or savepoint path, or 'latest' (the newest retained under "
        "flink.checkpoint_dir)",
    )
    parser.add_argument("--starting-offsets", choices=["latest", "earliest"], default=None)
    parser.add_argument("--delivery", choices=["at-least-once", "exactly-once"], default=None)
    parser.add_argument(
        "--bounded",
        action="store_true",
        help="stop at the end offsets found at start, closing every open bar (finite runs)",
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job until it ends (bounded) or is stopped; returns the exit code."""
    from streamfolio.flink.runtime import JobOptions, create_environment, prepare_process

    args = parse_args(argv)
    settings = load_config(args.config)
    options = JobOptions.from_settings(
        settings,
        parallelism=args.parallelism,
        from_checkpoint=args.from_checkpoint,
        starting_offsets=args.starting_offsets,
        delivery=args.delivery,
        bounded=args.bounded,
    )
    prepare_process()
    env = create_environment(settings, options)
    build_pipeline(env, settings, options)
    env.execute(options.job_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
