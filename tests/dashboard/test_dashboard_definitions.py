"""The dashboard follows the portfolios topic (no broker): a portfolio defined at run time is
listed with its tickers and its records shown; a removed one disappears."""

from __future__ import annotations

from streamfolio.config import example_config_path, load_config
from streamfolio.dashboard.consumer import DashboardConsumer
from streamfolio.dashboard.state import DashboardState
from streamfolio.kafka.definitions import DefinitionRead
from streamfolio.messages import PortfolioDefinition, Weights
from streamfolio.portfolio_book import PortfolioBook
from streamfolio.serde import codec_for

SETTINGS = load_config(example_config_path(), environ={})
T0 = 1_790_845_200_000


class LateDefinitions:
    """The portfolios topic, where ``pending`` is published after the dashboard started."""

    def __init__(self, book: PortfolioBook, pending: list[DefinitionRead]) -> None:
        self.book = book
        self.pending = pending

    caught_up = True

    def catch_up(self, timeout_s: float = 10.0) -> int:
        taken = len(self.pending)
        for read in self.pending:
            self.book.apply(read)
        self.pending = []
        return taken

    def poll_some(self, max_records: int = 100) -> int:
        return 0

    def close(self) -> None:
        pass


def test_a_portfolio_defined_at_run_time_is_listed_then_removed() -> None:
    state = DashboardState.from_settings(SETTINGS)
    book = PortfolioBook(SETTINGS, resolve_notify=False)
    book.apply(DefinitionRead("new", T0, PortfolioDefinition(T0, "new", ("ATW", "IAM"), 60)))
    seq = state.seq
    assert state.follow(book) and state.seq > seq
    listed = {s["id"]: s for s in state.summaries()}
    assert "new" in listed and state.knows("new")
    assert state.follow(book) is False  # nothing new
    book.apply(DefinitionRead("new", T0 + 60_000, None))
    assert state.follow(book) and not state.knows("new")
    assert [s["id"] for s in state.summaries()] == [p.id for p in SETTINGS.portfolios]


def test_a_record_of_a_portfolio_not_known_yet_is_shown_after_reading_the_topic() -> None:
    state = DashboardState.from_settings(SETTINGS)
    book = PortfolioBook(SETTINGS, resolve_notify=False)
    defined = DefinitionRead("new", T0, PortfolioDefinition(T0, "new", ("ATW", "IAM"), 60))
    consumer = DashboardConsumer(
        SETTINGS, state, book=book, definitions=LateDefinitions(book, [defined])
    )
    weights = Weights("new", T0, {"ATW": 0.5, "IAM": 0.5})
    value = codec_for("Weights").encode(weights.to_record())
    assert consumer.take(SETTINGS.topics.weights, value, b"new")
    assert state.knows("new")
    # Not defined anywhere: refused and counted as before.
    ghost = codec_for("Weights").encode(Weights("ghost", T0, {"ATW": 1.0}).to_record())
    assert not consumer.take(SETTINGS.topics.weights, ghost, b"ghost")
