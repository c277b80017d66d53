"""``streamfolio demo``: the whole loop on this machine (:mod:`streamfolio.demo`), or with
``--offline`` the core alone over simulated ticks, without Kafka or Flink."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, cast

import typer

from streamfolio.cli_support import command_errors, config_option, load_settings, one_of, say
from streamfolio.errors import UsageError
from streamfolio.observability.options import LogFormatOption

ON_FAILURE = ("restart", "stop")
FLINK = ("local", "cluster")

__all__ = ["demo"]

DemoConfigOption = Annotated[Path | None, config_option("the packaged examples/demo.yaml")]

# The options only the live demo uses (--bars is the one only --offline uses).
_LIVE_ONLY = (
    "duration",
    "source",
    "prices",
    "speed",
    "port",
    "keep_topics",
    "on_failure",
    "flink",
)


def demo(
    ctx: typer.Context,
    config: DemoConfigOption = None,
    duration: Annotated[
        float | None,
        typer.Option(min=0, help="Stop after this many seconds (default: until Ctrl-C)."),
    ] = None,
    source: Annotated[str, typer.Option(help="Price feed: sim, replay or cse.")] = "sim",
    prices: Annotated[Path | None, typer.Option(help="replay: the tick CSV.")] = None,
    speed: Annotated[float, typer.Option(min=0, help="replay: 1 = real time, 0 = fast.")] = 1.0,
    port: Annotated[int, typer.Option(min=0, max=65535, help="Dashboard port.")] = 8050,
    keep_topics: Annotated[
        bool, typer.Option(help="Keep what the topics hold (default: start them empty).")
    ] = False,
    on_failure: Annotated[
        str,
        typer.Option(
            metavar="restart|stop",
            help="When a component exits: restart it (after 1 s, 2 s, 4 s ... up to 60 s; reset "
            "once it ran 2 min; the job resumes from its newest checkpoint), or stop the demo. "
            "More than 5 restarts of one component within 10 min stop the demo too; a stop for "
            "a component exits 1 with the reason and the component's log.",
        ),
    ] = "restart",
    flink: Annotated[
        str,
        typer.Option(
            metavar="local|cluster",
            help="Where the job runs: local (its own process, on a Flink MiniCluster) or cluster "
            "(the local Flink session cluster of `streamfolio flink up`, started if it is not "
            "running and then stopped again; the job submitted there and followed, cancelled "
            "at the end; docs/flink.md).",
        ),
    ] = "local",
    offline: Annotated[
        bool,
        typer.Option(
            help="No Kafka or Flink: replay --bars simulated bars through the core, print a "
            "summary and end (the live view's options do not apply)."
        ),
    ] = False,
    bars: Annotated[int, typer.Option(min=10, help="--offline: bars to simulate.")] = 600,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 7,
    log_format: LogFormatOption = "text",
) -> None:
    """Run the whole loop on this machine: Kafka, the streaming job, the simulator, the rebalancer,
    the store and the dashboard, with a live view per portfolio.

    The default configuration is the packaged examples/demo.yaml: the example CSE portfolios on
    daily bars, one simulated trading day every two seconds; after about 90 s the banks sell off
    and portf1 rebalances. Ctrl-C, SIGTERM, SIGHUP (closing the terminal) or --duration stops
    everything and leaves nothing running; a requested stop exits with code 0. The topics are
    emptied first, on the local broker only: pointed at another cluster the demo refuses.

    Kafka is what `streamfolio kafka up` starts for the configuration: with
    examples/cluster.yaml a secured cluster of three brokers, every component its own principal
    (docs/kafka-cluster.md). With --flink cluster the job runs on the local Flink session
    cluster (`streamfolio flink up`). A broker or Flink cluster found running is left running.

    The live view shows each component's state (running, waiting for the broker, restarting,
    stopped) and whether the broker answers; logs are under .cache/demo/, where a restarted
    component's log goes on after a line naming the restart.
    """
    from streamfolio.config import example_config_path

    path = config or example_config_path().with_name("demo.yaml")
    with command_errors():
        _check_options(ctx, offline, source, prices, on_failure, flink)
        one_of(log_format, ("text", "json"), "--log-format")
    if offline:
        _offline_demo(path, bars, seed)
        return
    from streamfolio.demo import DemoOptions, run_demo
    from streamfolio.demo.engines import FlinkMode
    from streamfolio.demo.supervision import OnFailure

    options = DemoOptions(
        config_path=path,
        duration_s=duration,
        source=source,
        prices=prices,
        speed=speed,
        seed=seed,
        dashboard_port=port,
        keep_topics=keep_topics,
        on_failure=cast(OnFailure, on_failure),
        flink=cast(FlinkMode, flink),
        log_format=log_format,
    )
    with command_errors():
        code = run_demo(options, progress=say)
    raise typer.Exit(code)


def _check_options(
    ctx: typer.Context,
    offline: bool,
    source: str,
    prices: Path | None,
    on_failure: str,
    flink: str = "local",
) -> None:
    """Refuse options given on the command line that the chosen mode would ignore."""

    def given(name: str) -> bool:
        source = ctx.get_parameter_source(name)
        return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")

    if offline:
        ignored = [n for n in _LIVE_ONLY if given(n)]
        if ignored:
            names = ", ".join("--" + n.replace("_", "-") for n in ignored)
            raise UsageError(
                f"{names}: not used by --offline, which replays --bars simulated bars as fast as "
                f"it can and ends (fix: drop {names}, or drop --offline for the live demo)"
            )
        return
    if given("bars"):
        raise UsageError(
            "--bars: only --offline simulates a fixed number of bars (fix: add --offline, or "
            "stop the live demo with --duration)"
        )
    one_of(source, ("sim", "replay", "cse"), "--source")
    one_of(on_failure, ON_FAILURE, "--on-failure")
    one_of(flink, FLINK, "--flink")
    if source == "replay" and prices is None:
        raise UsageError("--source replay needs --prices FILE (a tick CSV time,ticker,price)")


def _offline_demo(config: Path, bars: int, seed: int) -> None:
    import tempfile

    from streamfolio.state import run_replay, simulated_ticks_csv, summarise

    with command_errors():
        settings = load_settings(config)
        with tempfile.TemporaryDirectory(prefix="streamfolio-demo-") as tmp:
            ticks = Path(tmp) / "ticks.csv"
            n = simulated_ticks_csv(
                settings,
                ticks,
                bars=bars,
                ticks_per_bar=3,
                regime_change=None,
                seed=seed,
                progress=say,
            )
            say(f"simulated {n} ticks over {bars} bars (regime change half-way)")
            events = list(
                run_replay(settings, prices=ticks, state_path=None, rebalance=True, progress=say)
            )
    summarise(settings, events, echo=typer.echo)
