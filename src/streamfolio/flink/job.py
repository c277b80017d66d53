"""The streaming job, wired top to bottom as the data flows (PyFlink, SQL + DataStream).

::

    prices topic ──Kafka table (event time from the bytes → per-partition watermarks) ─┐
        → per partition       greatest event time read so far (SQL OVER)              │
        → decode_tick         Python, per tick: validate; late per partition     ─┤ dead
        → TUMBLE + Top-1      Flink SQL, per bar size: each (ticker, bar)'s close  │ letters
        ── from here on, Python once per bar ──                                   │
        → key (ticker, bar)   ChainCloses: log returns                            ─┤
        → key (bar size)      CollectCloses: the whole bar, to the portfolio shards │
        → key (bar size|shard) GatherBars: the bar and its member portfolios  ←──┐ │
    portfolios topic ────→ DecodeDefinitions → read ─→ memberships ────────────┤ │
    initial-stats topic ─┐                                                      │ │
    weights topic ───────┴→ DecodeControls → read (holds bars only until first read) ─┤
        → key (shard)        PortfolioShards: statistics & metrics in keyed state, ─┘
                             a shard's portfolios in one numpy step per bar
        → updated-stats topic, metrics topic (keyed by portfolio id); dead-letter topic

Run locally with ``streamfolio job run`` (a MiniCluster in this process) or on a cluster with
``flink run --python .../streamfolio/flink/job.py`` (``streamfolio job submit`` prints the
command). ``main`` takes the same options as ``job run``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streamfolio.config import Settings, load_config
from streamfolio.flink.records import JobControlKind
from streamfolio.flink.routing import Routing, routing
from streamfolio.intake import Intake
from streamfolio.kafka.topics import contract

if TYPE_CHECKING:
    from pyflink.datastream import DataStream, OutputTag, StreamExecutionEnvironment

    from streamfolio.flink.runtime import JobOptions
    from streamfolio.kafka.topics import Role

__all__ = ["Routing", "build_pipeline", "main", "routing"]


def build_pipeline(
    env: StreamExecutionEnvironment, settings: Settings, options: JobOptions | None = None
) -> None:
    """Add the job's sources, operators and sinks to ``env`` (run it with ``env.execute()``)."""
    from pyflink.common import Types, WatermarkStrategy
    from pyflink.table import StreamTableEnvironment

    from streamfolio.flink import operators as op
    from streamfolio.flink import prices, records
    from streamfolio.flink.bars import ChainCloses, CollectCloses, GatherBars
    from streamfolio.flink.closes import bar_closes
    from streamfolio.flink.connectors import (
        KafkaTableSinks,
        control_watermarks,
        kafka_source,
        source_parallelism,
    )
    from streamfolio.flink.dead_letters import dead_letter_tag
    from streamfolio.flink.definitions import DecodeDefinitions, MembershipChanges
    from streamfolio.flink.runtime import JobOptions

    options = options or JobOptions.from_settings(settings)
    route = routing(settings)
    topics = {role: contract(settings, role) for role in ("initial_stats", "weights", "portfolios")}
    t_env = StreamTableEnvironment.create(env)

    # 1-3. Prices, per tick in Flink SQL: Kafka table with per-partition watermarks → decode
    # and validate (the one Python call per tick) → each (ticker, bar)'s close in windows.
    closes = t_env.to_data_stream(bar_closes(t_env, settings, options, route))

    # 4. Control messages: portfolio definitions, initial statistics and weights, keyed by
    # portfolio id. They are read from the start of their topics: they are the portfolios'
    # configuration, not a feed.
    controls = []
    inputs: tuple[tuple[Role, JobControlKind], ...] = (
        ("portfolios", "definition"),
        ("initial_stats", "stats"),
        ("weights", "weights"),
    )
    refused: list[DataStream] = []
    for role, kind in inputs:
        readers = source_parallelism(settings, role, options.parallelism)
        source = (
            env.from_source(
                kafka_source(
                    settings, role, starting="earliest", bounded=options.bounded, whole=True
                ),
                WatermarkStrategy.no_watermarks(),
                role,
            )
            .set_parallelism(readers)
            .uid(f"source-{role}")
        )
        decode = (
            DecodeDefinitions(settings, topics[role].name)
            if kind == "definition"
            else op.DecodeControls(kind, Intake.from_settings(settings), topics[role].name)
        )
        decoded = (
            source.process(decode)
            .set_parallelism(readers)
            .name(f"decode {kind}")
            .uid(f"decode-{kind}")
        )
        refused.append(side_output(decoded, dead_letter_tag()))
        controls.append(
            decoded.assign_timestamps_and_watermarks(control_watermarks(settings.flink))
            .set_parallelism(readers)
            .name(f"{kind} read")
            .uid(f"{kind}-read")
        )

    # From here on Python runs once per bar. Log returns per (ticker, bar size), sent to every
    # shard of the bar size; dead letters of the SQL stage leave here. Each shard sends a bar
    # to the portfolios that are its members then: the definitions say which.
    returns = (
        closes.key_by(prices.close_key, key_type=Types.STRING())
        .process(ChainCloses())
        .name("chain closes")
        .uid("chain-closes")
    )
    whole_bars = (
        returns.key_by(records.bar_size_key, key_type=Types.STRING())
        .process(CollectCloses())
        .name("collect closes")
        .uid("collect-closes")
    )
    sizes = sorted({size for sizes in route.bar_sizes.values() for size in sizes})
    memberships = controls[0].flat_map(MembershipChanges(sizes)).name("memberships")
    bars = (
        whole_bars.connect(memberships)
        .key_by(records.shard_key, records.membership_key, key_type=Types.STRING())
        .process(GatherBars(route.members))
        .name("gather bars")
        .uid("gather-bars")
    )

    # 5. Per shard of portfolios: statistics and metrics in keyed state, bar by bar in event
    # time, the shard's portfolios in one step (a control message: its portfolio alone).
    portfolios = (
        bars.connect(controls[0].union(controls[1], controls[2]))
        .key_by(records.member_bars_key, records.control_key, key_type=Types.STRING())
        .process(
            op.PortfolioShards(
                route.specs,
                {
                    "stats": topics["initial_stats"].name,
                    "weights": topics["weights"].name,
                    "definition": topics["portfolios"].name,
                },
                stats_every_bars=settings.flink.stats_every_bars,
                stats_layout=settings.flink.stats_layout,
            ),
            output_type=op.keyed_bytes_type(),
        )
        .name("portfolio statistics")
        .uid("portfolio-shards")
        # The sinks' Java work (Kafka records, the producer) in tasks of their own, on another
        # core than the portfolio step's Python (BENCHMARKS.md, "Ten thousand portfolios").
        .disable_chaining()
    )
    metrics = side_output(portfolios, op.metrics_tag())

    # 6. Sinks: statistics and metrics keyed by portfolio id; every dead letter to one topic.
    dead: DataStream = side_output(portfolios, dead_letter_tag()).union(
        side_output(returns, dead_letter_tag()),
        *refused,
    )
    sinks = KafkaTableSinks(
        t_env,
        settings,
        delivery=options.delivery,
        transactional_id_prefix=options.transactional_id_prefix,
    )
    sinks.add(portfolios, "updated_stats", keyed=True)
    sinks.add(metrics, "metrics", keyed=True)
    sinks.add(dead, "dead_letter", keyed=False)
    sinks.attach()


def side_output(stream: DataStream, tag: OutputTag) -> DataStream:
    """``stream``'s side output ``tag``, as the Java side of a Python operator emits it.

    PyFlink's ``DataStream.get_side_output`` adds a Python identity map with the tag's type
    after it: one more crossing into the interpreter and back per record (10,000 a second for
    the metrics of 10,000 portfolios on 1 s bars, BENCHMARKS.md). The Python operators already
    emit their side outputs in the tag's Java type, which the sinks read as they are.
    """
    from pyflink.datastream import DataStream

    return DataStream(stream._j_data_stream.getSideOutput(tag.get_java_output_tag()))


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
