"""Adding, changing and removing portfolios while everything runs: what ``streamfolio
portfolio add | update | remove`` and ``init --publish`` write to Kafka.

A portfolio added at event time T is three messages stamped T: its definition (the
``portfolios`` topic), its initial statistics computed from the price history exactly as
``streamfolio init`` computes them, and its initial weights (configured, else Black-Litterman).
The job applies them in that order at T (docs/semantics.md, "Portfolios as data"). A changed
definition that keeps the portfolio's moments (:meth:`PortfolioSpec.keeps_moments_of`: same
tickers, bar size and estimator) is the definition alone; any other change starts the portfolio
again, so new initial statistics and weights go with it. A removal is a tombstone stamped T.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamfolio.config import PortfolioSettings, Settings
from streamfolio.errors import ConfigError, DataError
from streamfolio.kafka.clients import RecordProducer
from streamfolio.kafka.definitions import publish_definition, publish_removal, read_topic
from streamfolio.kafka.topics import contract
from streamfolio.messages import PortfolioDefinition
from streamfolio.portfolios import definition_of, portfolio_of, portfolio_spec

__all__ = ["Change", "apply_changes", "current_portfolios", "plan_changes", "remove_portfolios"]

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Change:
    """One portfolio to publish: its definition, and whether it starts from new initial
    statistics and weights (``seeded``)."""

    portfolio: PortfolioSettings
    definition: PortfolioDefinition
    seeded: bool
    what: str
    """``added``, ``changed`` (the moments carry on) or ``restarted`` (new initial state)."""


def current_portfolios(settings: Settings) -> dict[str, PortfolioSettings]:
    """The portfolios in force as their newest definitions say: the configured ones, replaced
    or removed by the definitions topic's (read to its end)."""
    on_topic, removed = read_topic(settings)
    found = {p.id: p for p in settings.portfolios if p.id not in removed}
    for portfolio_id, definition in on_topic.items():
        found[portfolio_id] = portfolio_of(definition, settings)
    return found


def plan_changes(
    settings: Settings,
    portfolios: Sequence[PortfolioSettings],
    at_ms: int,
    *,
    adding: bool,
) -> list[Change]:
    """What publishing ``portfolios`` at ``at_ms`` means: ``adding`` refuses an id in force,
    otherwise (update) one that is not."""
    current = current_portfolios(settings)
    changes = []
    for portfolio in portfolios:
        old = current.get(portfolio.id)
        if adding and old is not None:
            raise ConfigError(
                f"portfolios[{portfolio.id}].id",
                "a portfolio with this id exists",
                "choose another id, or change it with `streamfolio portfolio update`",
            )
        if not adding and old is None:
            raise ConfigError(
                f"portfolios[{portfolio.id}].id",
                "no portfolio with this id is in force",
                "add it with `streamfolio portfolio add`",
            )
        definition = definition_of(portfolio, at_ms)
        if old is None:
            changes.append(Change(portfolio, definition, True, "added"))
            continue
        if portfolio.bar_seconds != old.bar_seconds:
            raise ConfigError(
                f"portfolios[{portfolio.id}].bar_seconds",
                f"cannot change from {old.bar_seconds} to {portfolio.bar_seconds} s bars",
                "remove the portfolio and add it under a new id",
            )
        new_spec = portfolio_spec(portfolio, settings.exchange)
        keeps = new_spec.keeps_moments_of(portfolio_spec(old, settings.exchange))
        changes.append(
            Change(portfolio, definition, not keeps, "changed" if keeps else "restarted")
        )
    return changes


def apply_changes(
    settings: Settings,
    changes: Sequence[Change],
    *,
    history: Path | None = None,
    index: Path | None = None,
    progress: Progress,
) -> None:
    """Publish ``changes``: the definitions (acknowledged first), then the initial statistics
    and weights of those that start again, all stamped with the definition's time; waits for
    the acks."""
    from streamfolio.state import initial_state

    seeded = [c.portfolio for c in changes if c.seeded]
    state: dict[str, Any] = {"portfolios": []}
    if seeded:
        state = initial_state(
            settings.model_copy(update={"portfolios": tuple(seeded)}),
            history=history,
            index=index,
            progress=progress,
        )
    initial = {entry["portfolio_id"]: entry for entry in state["portfolios"]}
    producer = RecordProducer(settings.kafka, component="admin")
    stats_topic, weights_topic = contract(settings, "initial_stats"), contract(settings, "weights")
    for change in changes:
        publish_definition(producer, settings, change.definition)
    # Acknowledged before anything of theirs is sent: a reader that finds a seed or weights of
    # a new portfolio finds its definition when it reads the portfolios topic to its end.
    _flush(producer, settings)
    for change in changes:
        at_ms = change.definition.timestamp
        entry = initial.get(change.portfolio.id)
        if entry is not None:
            producer.send(stats_topic, {**entry["stats"], "timestamp": at_ms}, timestamp_ms=at_ms)
            weights = {**entry["weights"], "timestamp": at_ms, "source": "portfolio"}
            producer.send(weights_topic, weights, timestamp_ms=at_ms)
    _flush(producer, settings)
    for change in changes:
        extra = " with new initial statistics and weights" if change.seeded else ""
        progress(f"{change.what} portfolio {change.portfolio.id}{extra}")


def remove_portfolios(
    settings: Settings, portfolio_ids: Sequence[str], at_ms: int, *, progress: Progress
) -> None:
    """Publish the tombstones removing ``portfolio_ids`` (each must be in force) at ``at_ms``."""
    current = current_portfolios(settings)
    for portfolio_id in portfolio_ids:
        if portfolio_id not in current:
            known = ", ".join(sorted(current)) or "none"
            raise ConfigError(
                "ID", f"no portfolio {portfolio_id!r} is in force", f"use one of: {known}"
            )
    producer = RecordProducer(settings.kafka, component="admin")
    for portfolio_id in portfolio_ids:
        publish_removal(producer, settings, portfolio_id, at_ms)
    _flush(producer, settings)
    for portfolio_id in portfolio_ids:
        progress(f"removed portfolio {portfolio_id}")


def _flush(producer: RecordProducer, settings: Settings) -> None:
    remaining = producer.flush(60)
    if remaining:
        raise DataError(
            f"{remaining} message(s) not acknowledged by {settings.kafka.bootstrap_servers}"
        )
