"""The portfolio book: which definition is in force when, and what it refuses (no broker)."""

from __future__ import annotations

import logging

import pytest

from streamfolio.config import Settings, example_config_path, load_config
from streamfolio.intake import Intake, Rejected
from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.messages import PortfolioDefinition, Weights
from streamfolio.portfolio_book import BEGINNING, PortfolioBook
from streamfolio.portfolios import definition_of
from streamfolio.serde import codec_for


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_config(example_config_path(), environ={})


def new_one(t: int, pid: str = "new", **changes: object) -> DefinitionRead:
    parameters: dict[str, object] = {"policy": {"sharpe_threshold": 0.7}}
    parameters.update(changes)
    tickers = parameters.pop("tickers", ("ATW", "IAM"))
    bar_seconds = parameters.pop("bar_seconds", 60)
    d = PortfolioDefinition(t, pid, tickers, bar_seconds, **parameters)  # type: ignore[arg-type]
    return DefinitionRead(pid, t, d)


def test_configured_portfolios_are_in_force_from_the_beginning(settings: Settings) -> None:
    book = PortfolioBook(settings)
    assert book.ids() == tuple(p.id for p in settings.portfolios)
    assert book.at("banks", BEGINNING) is settings.portfolio("banks")
    assert book.at("nope", 0) is None and book.latest("nope") is None


def test_a_new_portfolio_is_in_force_from_its_time(settings: Settings) -> None:
    book = PortfolioBook(settings)
    assert book.apply(new_one(1000)) is None
    assert book.at("new", 999) is None
    added = book.at("new", 1000)
    assert added is not None and added.policy.sharpe_threshold == 0.7
    assert book.for_bar("new", 1000) is None  # the bar ending at T is not the new portfolio's
    assert book.for_bar("new", 1001) is added
    assert "new" in book.ids() and book.specs["new"].tickers == ("ATW", "IAM")
    assert book.applied == 1


def test_a_change_applies_after_its_time_and_earlier_records_keep_the_old(
    settings: Settings,
) -> None:
    book = PortfolioBook(settings)
    book.apply(new_one(1000))
    book.apply(new_one(5000, policy={"sharpe_threshold": 1.5}, tickers=("ATW", "IAM", "BCP")))
    old, new = book.at("new", 4999), book.at("new", 5000)
    assert old is not None and old.policy.sharpe_threshold == 0.7
    assert new is not None and new.tickers == ("ATW", "IAM", "BCP")
    assert book.specs["new"].tickers == ("ATW", "IAM", "BCP")  # the live view follows


def test_definitions_read_out_of_time_order_are_placed_by_time(settings: Settings) -> None:
    book = PortfolioBook(settings)
    book.apply(new_one(5000, policy={"sharpe_threshold": 1.5}))
    book.apply(new_one(1000))
    assert [t for t, _ in book.history("new")] == [1000, 5000]
    latest = book.latest("new")
    assert latest is not None and latest.policy.sharpe_threshold == 1.5
    book.apply(new_one(5000, policy={"sharpe_threshold": 2.0}))  # the same time: replaced
    assert len(book.history("new")) == 2
    again = book.at("new", 6000)
    assert again is not None and again.policy.sharpe_threshold == 2.0


def test_a_removal_removes_from_its_time_on(settings: Settings) -> None:
    book = PortfolioBook(settings)
    book.apply(DefinitionRead("banks", 2000, None))
    assert book.at("banks", 1999) is settings.portfolio("banks")
    assert book.at("banks", 2000) is None and book.for_bar("banks", 2001) is None
    assert "banks" not in book.ids() and book.removed() == ("banks",)
    # Still judged (what it emitted before its removal may arrive late).
    assert "banks" in book.specs and book.last_defined("banks") is settings.portfolio("banks")


def test_a_removal_of_an_unknown_portfolio_changes_nothing(settings: Settings) -> None:
    book = PortfolioBook(settings)
    assert book.apply(DefinitionRead("ghost", 10, None)) is None
    assert book.history("ghost") == () and book.applied == 0


def test_an_invalid_definition_is_refused_with_the_configurations_message(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    book = PortfolioBook(settings)
    with caplog.at_level(logging.WARNING, logger="streamfolio.portfolio_book"):
        first = book.apply(new_one(1000, tickers=("ATW", "NOPE")))
        second = book.apply(new_one(2000, bar_seconds=7))
    assert first is not None and "portfolios[new].tickers" in first and "universe" in first
    assert second is not None and "bar_seconds" in second
    assert book.refused["new"] == 2 and "new" not in book.ids()
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    # An invalid change leaves the definition in force as it was.
    book.apply(new_one(3000))
    assert book.apply(new_one(4000, bounds={"min": 0.9, "max": 1.0})) is not None
    kept = book.at("new", 5000)
    assert kept is not None and kept.policy.sharpe_threshold == 0.7


def test_an_unreadable_record_is_refused(settings: Settings) -> None:
    book = PortfolioBook(settings)
    problem = book.apply(DefinitionRead("x", 5, None, "not a PortfolioDefinition"))
    assert problem == "not a PortfolioDefinition" and book.refused["x"] == 1


def test_notify_references_resolve_in_the_rebalancers_environment_only(
    settings: Settings,
) -> None:
    read = new_one(1000, notify=("env:OWNER_URL",))
    assert PortfolioBook(settings, environ={}).apply(read) is not None  # unset: refused
    resolving = PortfolioBook(settings, environ={"OWNER_URL": "json://localhost/hook"})
    assert resolving.apply(read) is None
    resolved = resolving.latest("new")
    assert resolved is not None and resolved.notify[0].get_secret_value() == (
        "json://localhost/hook"
    )
    silent = PortfolioBook(settings, environ={}, resolve_notify=False)
    assert silent.apply(read) is None
    quiet = silent.latest("new")
    assert quiet is not None and quiet.notify == ()


def test_the_specs_are_what_an_intake_judges_by(settings: Settings) -> None:
    book = PortfolioBook(settings)
    intake = Intake(book.specs, max_future_skew_ms=None)
    raw = codec_for("Weights").encode(Weights("new", 1000, {"ATW": 0.5, "IAM": 0.5}).to_record())
    with pytest.raises(Rejected) as refused:
        intake.weights(raw, b"new")
    assert refused.value.reason == "unknown_portfolio"
    book.apply(new_one(1000))
    assert intake.weights(raw, b"new").portfolio_id == "new"


def test_a_configured_portfolio_republished_replaces_its_configuration(
    settings: Settings,
) -> None:
    banks = settings.portfolio("banks")
    book = PortfolioBook(settings)
    assert book.apply(DefinitionRead("banks", 100, definition_of(banks, 100))) is None
    assert [t for t, _ in book.history("banks")] == [BEGINNING, 100]
