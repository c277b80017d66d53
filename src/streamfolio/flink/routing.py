"""Where the job sends each ticker's ticks and each bar: the routing tables of the portfolios.

Built once from the configuration when the job is built and captured by the operators that need
them: every ticker of the universe (``exchange.universe`` and the configured portfolios') gets a
close in every bar size the job computes (``flink.bar_seconds`` and the configured portfolios'),
so that a portfolio defined while the job runs (the portfolios topic) finds its tickers' closes
and returns chained from the start. The portfolios of one bar size are cut into
:data:`PORTFOLIO_SHARDS` slices, so a bar of a ticker reaches each slice once rather than each
portfolio; the configured portfolios are the slices' first members, the definitions change them
(:class:`~streamfolio.flink.bars.GatherBars`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Final

from streamfolio.config import Settings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.portfolios import job_bar_seconds, portfolio_spec, universe

__all__ = ["PORTFOLIO_SHARDS", "Routing", "routing", "shard_of"]

PORTFOLIO_SHARDS: Final = 8
"""How many slices the portfolios of one bar size are cut into. Fixed, not tied to the
parallelism: the shards are state keys, so the count must not change between restarts. It
bounds the parallelism of the gathering step per bar size; each bar costs one record per shard
(:class:`~streamfolio.flink.bars.CollectCloses`; before issue #15 it was tickers × shards, and 32
shards made those records the bottleneck of the 1,000-portfolio run, BENCHMARKS.md)."""


def shard_of(portfolio_id: str) -> int:
    """The shard of a portfolio: stable across processes and restarts (not ``hash()``).

    >>> shard_of("banks"), shard_of("banks") == shard_of("banks")
    (6, True)
    """
    return zlib.crc32(portfolio_id.encode()) % PORTFOLIO_SHARDS


@dataclass(frozen=True)
class Routing:
    """Where ticks and bars go, from the configured portfolios (membership is static)."""

    specs: dict[str, PortfolioSpec]
    bar_sizes: dict[str, tuple[int, ...]]
    """Ticker of the universe → the bar sizes (ms) the job computes."""
    shards: dict[tuple[str, int], tuple[str, ...]]
    """(ticker, bar ms) → keys ``bar_ms|n`` of the shards with a portfolio holding it."""
    members: dict[str, dict[str, tuple[str, ...]]]
    """Shard key → its portfolios' ids → their tickers."""


def routing(settings: Settings) -> Routing:
    """The routing tables of ``settings``' portfolios.

    >>> from streamfolio.config import example_config_path, load_config
    >>> r = routing(load_config(example_config_path(), environ={}))
    >>> r.bar_sizes["IAM"], r.shards[("ATW", 300_000)], r.members["300000|6"]
    ((60000, 300000), ('300000|6',), {'banks': ('ATW', 'BCP', 'BOA')})
    """
    specs = {p.id: portfolio_spec(p, settings.exchange) for p in settings.portfolios}
    shards: dict[tuple[str, int], list[str]] = {}
    members: dict[str, dict[str, tuple[str, ...]]] = {}
    for spec in specs.values():
        shard = f"{spec.bar_ms}|{shard_of(spec.portfolio_id)}"
        members.setdefault(shard, {})[spec.portfolio_id] = tuple(spec.tickers)
        for ticker in spec.tickers:
            keys = shards.setdefault((ticker, spec.bar_ms), [])
            if shard not in keys:
                keys.append(shard)
    sizes = tuple(b * 1000 for b in job_bar_seconds(settings))
    return Routing(
        specs,
        {t: sizes for t in sorted(universe(settings))},
        {key: tuple(keys) for key, keys in shards.items()},
        members,
    )
