"""The portfolios a Python service knows, and since when: the configured ones plus every
definition read from the portfolios topic (:class:`PortfolioBook`), kept current by a
:class:`DefinitionsFollower`.

A definition takes effect at its ``timestamp`` T (event time); a removal (a tombstone) removes
its portfolio from its Kafka timestamp T on. The configured portfolios are in force from the
beginning of time until a definition of the same id replaces them. A record stamped ``t`` is
judged against the definition in force at ``t``: :meth:`PortfolioBook.at` (T <= t) for weights
and statistics, :meth:`PortfolioBook.for_bar` (T < t) for what the job computed over the bar
ending at ``t`` (its metrics), since a definition applies to the bars ending after T.

A service knows every definition it needs before it handles a record: ``streamfolio portfolio
add`` publishes a definition before anything stamped after it can exist, so reading the topic to
the end offsets observed after the records were read (:meth:`DefinitionsFollower.catch_up`, cheap:
definitions are rare) is enough. Compaction keeps only a portfolio's newest definition, so after a
restart the book knows that one alone; what is stamped before it is judged by it too (or, for a
configured portfolio, by its configuration).

An invalid definition (one the configuration would refuse: unknown tickers, a bar size the job
does not compute, bounds leaving no room...) is refused with the configuration's message, counted
and logged once per portfolio; whatever was in force before stays in force.
"""

from __future__ import annotations

import bisect
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Final, Protocol

from confluent_kafka import KafkaException

from streamfolio.config import Component, PortfolioSettings, Settings
from streamfolio.core.portfolio import PortfolioSpec
from streamfolio.errors import ConfigError
from streamfolio.kafka.clients import ConsumedRecord, RecordConsumer
from streamfolio.kafka.definitions import DefinitionRead, read_one
from streamfolio.kafka.topics import contract
from streamfolio.portfolios import portfolio_of, portfolio_spec

__all__ = [
    "BEGINNING",
    "PERHAPS_NEWLY_DEFINED",
    "DefinitionsFollower",
    "DefinitionsSource",
    "PortfolioBook",
]

log = logging.getLogger(__name__)

BEGINNING: Final = -(2**63)
"""The effective time of a configured portfolio: before any record."""

PERHAPS_NEWLY_DEFINED: Final = frozenset(
    {"unknown_portfolio", "invalid_stats", "invalid_weights", "invalid_metrics"}
)
"""Refusals of :class:`~streamfolio.intake.Intake` that a definition not read yet could undo (a
new portfolio, changed tickers or bounds): a service judges such a record again after reading the
portfolios topic to its end."""

Entry = tuple[int, PortfolioSettings | None]
"""One step of a portfolio's history: from time T on, this definition (None: removed)."""


class _LatestSpecs(Mapping[str, PortfolioSpec]):
    """The streaming view of every portfolio's newest definition, live (see
    :attr:`PortfolioBook.specs`)."""

    def __init__(self, book: PortfolioBook) -> None:
        self._book = book

    def __getitem__(self, portfolio_id: str) -> PortfolioSpec:
        return self._book._spec(portfolio_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self._book._defined)

    def __len__(self) -> int:
        return len(self._book._defined)


class _LatestTickers(Mapping[str, tuple[str, ...]]):
    """Every portfolio's tickers in its newest definition, live (:attr:`PortfolioBook.tickers`)."""

    def __init__(self, book: PortfolioBook) -> None:
        self._book = book

    def __getitem__(self, portfolio_id: str) -> tuple[str, ...]:
        return tuple(self._book._defined[portfolio_id].tickers)

    def __iter__(self) -> Iterator[str]:
        return iter(self._book._defined)

    def __len__(self) -> int:
        return len(self._book._defined)


class PortfolioBook:
    """The configured portfolios and every definition read, as a history per portfolio.

    ``resolve_notify`` False leaves the ``notify`` targets out before validating a definition:
    only the rebalancer sends notifications, and only its environment holds the variables and
    files their ``env:``/``file:`` references name.

    >>> from streamfolio.config import example_config_path, load_config
    >>> from streamfolio.portfolios import definition_of
    >>> settings = load_config(example_config_path(), environ={})
    >>> book = PortfolioBook(settings)
    >>> book.at("banks", 0).policy.sharpe_threshold
    0.3
    >>> banks = settings.portfolio("banks")
    >>> stricter = banks.model_copy(update={"policy": banks.policy.model_copy(
    ...     update={"sharpe_threshold": 0.9})})
    >>> book.apply(DefinitionRead("banks", 1000, definition_of(stricter, 1000))) is None
    True
    >>> book.for_bar("banks", 1000).policy.sharpe_threshold  # the bar ending at T: before it
    0.3
    >>> book.at("banks", 1000).policy.sharpe_threshold
    0.9
    >>> book.apply(DefinitionRead("banks", 2000, None)) is None
    True
    >>> book.at("banks", 2500) is None, "banks" in book.ids(), "banks" in book.specs
    (True, False, True)
    """

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        resolve_notify: bool = True,
    ) -> None:
        self.settings = settings
        self._environ = environ
        self._resolve_notify = resolve_notify
        self._history: dict[str, list[Entry]] = {
            p.id: [(BEGINNING, p)] for p in settings.portfolios
        }
        self._defined: dict[str, PortfolioSettings] = {p.id: p for p in settings.portfolios}
        self._specs: dict[str, PortfolioSpec] = {}
        self.refused: Counter[str] = Counter()
        """Definitions refused, by portfolio id."""
        self.applied = 0
        """Definitions and removals taken (the configured portfolios not counted)."""
        self.specs: Mapping[str, PortfolioSpec] = _LatestSpecs(self)
        """Every portfolio ever defined (removed ones too, so that what they emitted before
        their removal is still judged) in its newest definition, as the streaming view: what
        :class:`~streamfolio.intake.Intake` takes as ``portfolios``, kept current."""
        self.tickers: Mapping[str, tuple[str, ...]] = _LatestTickers(self)
        """The tickers of the same portfolios, as :attr:`specs` has them."""

    # -- reading ---------------------------------------------------------------------------------

    def at(self, portfolio_id: str, t: int) -> PortfolioSettings | None:
        """The definition in force at ``t``: the newest with T <= t; None when the portfolio
        was removed then, or not defined yet (or never)."""
        history = self._history.get(portfolio_id)
        if not history:
            return None
        i = bisect.bisect_right(history, t, key=lambda entry: entry[0])
        return history[i - 1][1] if i else None

    def for_bar(self, portfolio_id: str, bar_end: int) -> PortfolioSettings | None:
        """The definition in force for the bar ending at ``bar_end``: the newest with
        T < ``bar_end``."""
        return self.at(portfolio_id, bar_end - 1)

    def latest(self, portfolio_id: str) -> PortfolioSettings | None:
        """The newest definition (None: removed, or never defined)."""
        history = self._history.get(portfolio_id)
        return history[-1][1] if history else None

    def last_defined(self, portfolio_id: str) -> PortfolioSettings | None:
        """The newest definition that is not a removal (None: never defined)."""
        return self._defined.get(portfolio_id)

    def ids(self) -> tuple[str, ...]:
        """The portfolios whose newest definition is not a removal, configured ones first."""
        return tuple(pid for pid, history in self._history.items() if history[-1][1] is not None)

    def removed(self) -> tuple[str, ...]:
        """The portfolios whose newest definition is a removal."""
        return tuple(pid for pid, history in self._history.items() if history[-1][1] is None)

    def history(self, portfolio_id: str) -> tuple[Entry, ...]:
        """Every (T, definition) known for ``portfolio_id``, in T order."""
        return tuple(self._history.get(portfolio_id, ()))

    def _spec(self, portfolio_id: str) -> PortfolioSpec:
        spec = self._specs.get(portfolio_id)
        if spec is None:
            spec = portfolio_spec(self._defined[portfolio_id], self.settings.exchange)
            self._specs[portfolio_id] = spec
        return spec

    # -- writing ---------------------------------------------------------------------------------

    def apply(self, read: DefinitionRead) -> str | None:
        """Take one record of the definitions topic; returns why it was refused, or None.

        A removal of a portfolio never defined changes nothing. Never raises for what a
        record holds: a service must not stop on another producer's mistake.
        """
        pid = read.portfolio_id
        problem = read.error
        portfolio: PortfolioSettings | None = None
        if problem is None and read.definition is not None:
            definition = read.definition
            if not self._resolve_notify:
                definition = replace(definition, notify=())
            try:
                portfolio = portfolio_of(definition, self.settings, environ=self._environ)
            except ConfigError as exc:
                problem = str(exc)
        if problem is not None:
            if self.refused[pid] == 0:
                log.warning(
                    "portfolio definition of %s at %d refused (further ones are only counted): %s",
                    pid[:64],
                    read.timestamp_ms,
                    problem,
                    extra={"portfolio_id": pid},
                )
            self.refused[pid] += 1
            return problem
        if portfolio is None and pid not in self._history:
            return None
        self._insert(pid, read.timestamp_ms, portfolio)
        self.applied += 1
        return None

    def _insert(self, pid: str, t: int, portfolio: PortfolioSettings | None) -> None:
        history = self._history.setdefault(pid, [])
        i = bisect.bisect_left(history, t, key=lambda entry: entry[0])
        if i < len(history) and history[i][0] == t:
            history[i] = (t, portfolio)  # a definition sent again for the same time replaces it
        else:
            history.insert(i, (t, portfolio))
        newest = next((p for _, p in reversed(history) if p is not None), None)
        if newest is not None and newest is not self._defined.get(pid):
            self._defined[pid] = newest
            self._specs.pop(pid, None)


class DefinitionsSource(Protocol):
    """What reads the portfolios topic into a book (a :class:`DefinitionsFollower`; tests give
    their own)."""

    caught_up: bool

    def catch_up(self, timeout_s: float = 10.0) -> int: ...

    def poll_some(self, max_records: int = 100) -> int: ...

    def close(self) -> None: ...


class DefinitionsFollower:
    """Reads the portfolios topic into a :class:`PortfolioBook`: every partition from the
    beginning, outside any consumer group, nothing committed."""

    def __init__(
        self,
        settings: Settings,
        book: PortfolioBook,
        *,
        component: Component,
        group_id: str | None = None,
        listener: Callable[[ConsumedRecord, DefinitionRead, str | None], None] | None = None,
    ) -> None:
        """``group_id`` is only what the client requires: nothing joins or commits under it
        (default: a new one, ``streamfolio-<component>-portfolios-<random>``). ``listener``
        hears of every record read once the book took it: the record, what it holds, and why
        the book refused it (None: taken)."""
        self.book = book
        self._listener = listener
        self.read = 0
        self._consumer = RecordConsumer(
            settings.kafka,
            [contract(settings, "portfolios")],
            component=component,
            group_id=group_id or f"streamfolio-{component}-portfolios-{uuid.uuid4().hex[:8]}",
            from_beginning=True,
            assign_all=True,
            decode=False,
        )
        self._next: dict[tuple[str, int], int] = {}
        self.caught_up = False
        """Whether the last :meth:`catch_up` reached the end offsets it observed."""

    def catch_up(self, timeout_s: float = 10.0) -> int:
        """Read every partition to its end offset as observed now; returns how many records
        were read. Gives up (with a warning) after ``timeout_s``, or when the broker does not
        answer (a Kafka outage: the components wait it out, docs/outage.md): what is read is
        kept, and :attr:`caught_up` says whether the end was reached."""
        deadline = time.monotonic() + timeout_s
        count = 0
        self.caught_up = False
        try:
            ends = self._consumer.end_offsets(timeout=timeout_s)
            while self._behind(ends):
                if time.monotonic() > deadline:
                    log.warning(
                        "could not read the portfolios topic to its end within %g s", timeout_s
                    )
                    return count
                record = self._consumer.poll(0.05)
                if record is None:
                    self._advance_positions()
                else:
                    count += self._take(record)
        except KafkaException as exc:
            log.debug("portfolios topic not read to its end: %s", exc)
            return count
        self.caught_up = True
        return count

    def poll_some(self, max_records: int = 100) -> int:
        """Apply what has already been fetched, without waiting; returns how many were read
        (none while the broker does not answer)."""
        count = 0
        try:
            while count < max_records:
                record = self._consumer.poll(0)
                if record is None:
                    break
                count += self._take(record)
        except KafkaException as exc:
            log.debug("portfolios topic not read: %s", exc)
        return count

    def _take(self, record: ConsumedRecord) -> int:
        self._next[(record.topic, record.partition)] = record.offset + 1
        self.read += 1
        read = read_one(record)
        problem = self.book.apply(read)
        if self._listener is not None:
            self._listener(record, read, problem)
        return 1

    def _behind(self, ends: Mapping[tuple[str, int], int]) -> bool:
        return any(self._next.get(tp, 0) < end for tp, end in ends.items())

    def _advance_positions(self) -> None:
        # Compaction leaves gaps and a transactional producer leaves markers: only the
        # client's position says it went past them.
        for tp, offset in self._consumer.positions().items():
            if offset >= 0:
                self._next[tp] = max(self._next.get(tp, 0), offset)

    def close(self) -> None:
        self._consumer.close()
