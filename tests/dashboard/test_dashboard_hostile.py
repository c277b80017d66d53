"""The dashboard trusts nothing (issue #11): hostile records, parameters and Host headers.

Each table row is something a new user (or a DNS-rebinding page, or a misbehaving producer)
did to the dashboard; none of them may wipe history, grow the state, give a 500 or be served.

Messages go through the consumer, which judges them with the intake (the rules every component
applies: keys, decoding, the portfolio's fit, the future skew); records handed to the state
directly meet the dashboard's own rules (the window, the order of a history, sizes).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import typer
import uvicorn
from starlette.exceptions import StarletteDeprecationWarning
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from streamfolio.config import example_config_path, load_config
from streamfolio.dashboard.app import _Server, create_app
from streamfolio.dashboard.bounds import Limits, TimeWindow
from streamfolio.dashboard.cli import dashboard_command, listen
from streamfolio.dashboard.consumer import DashboardConsumer
from streamfolio.dashboard.security import allowed_hosts, host_name
from streamfolio.dashboard.state import DashboardState
from streamfolio.dashboard.view import PortfolioInfo
from streamfolio.errors import UsageError
from streamfolio.intake import Intake
from streamfolio.messages import (
    DeadLetter,
    PortfolioMetrics,
    PortfolioStats,
    RebalanceEvent,
    Weights,
)
from streamfolio.serde import codec_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)  # see test_dashboard_app.py
    from starlette.testclient import TestClient

T0 = 1_790_000_000_000  # epoch ms: the wall clock of these tests
MINUTE = 60_000
DAY = 86_400_000
SKEW = 300_000  # the default max future skew (validation.max_future_skew_ms)
WINDOW = 3650 * DAY  # the default history window
YEAR_9999 = 253_370_764_800_000  # 9999-01-01T00:00:00Z
BASE_URL = "http://localhost:8050"


class Clock:
    def __init__(self, now_ms: int = T0) -> None:
        self.now = now_ms / 1000

    def __call__(self) -> float:
        return self.now


def metrics(pid: str, t: int, sharpe: float = 0.4) -> dict[str, Any]:
    return {
        "portfolioId": pid,
        "risk": 0.2,
        "expectedReturn": 0.1,
        "sharpRatio": sharpe,
        "timestamp": t,
        "count": 10,
    }


def weights(pid: str, t: int, n: int = 2) -> dict[str, Any]:
    return {"timestamp": t, "portfolio_id": pid, "weights": {f"T{i}": 1.0 / n for i in range(n)}}


def stats(pid: str, t: int, n: int = 2, kind: str = "updated") -> dict[str, Any]:
    tickers = [f"T{i}" for i in range(n)]
    cov = np.eye(n) * 0.01
    return {
        "timestamp": t,
        "portfolio_id": pid,
        "meanReturns": dict.fromkeys(tickers, 0.001),
        "covarianceMatrix": {
            a: {b: float(cov[i, j]) for j, b in enumerate(tickers)} for i, a in enumerate(tickers)
        },
        "tickers": tickers,
        "count": 100,
        "kind": kind,
    }


def event(pid: str, t: int) -> dict[str, Any]:
    return {
        "portfolio_id": pid,
        "timestamp": t,
        "reason": "Sharpe below threshold",
        "decision": "rebalance",
        "old_weights": {"T0": 0.5, "T1": 0.5},
        "new_weights": {"T0": 0.7, "T1": 0.3},
        "sharpe_before": 0.2,
        "sharpe_after": 0.6,
        "expected_return_after": 0.1,
        "risk_after": 0.15,
        "turnover": 0.4,
        "optimizer_status": "optimal",
        "event_id": f"{pid}@{t}",
    }


def with_history() -> DashboardState:
    """Two configured portfolios; ``banks`` has an hour of real records up to T0 - 1 minute."""
    infos = [PortfolioInfo("banks", ("T0", "T1"), "desk", 0.3, 0.05), PortfolioInfo("telecom")]
    state = DashboardState(infos, limits=Limits(metrics=100), clock=Clock())
    start = T0 - 60 * MINUTE
    assert state.apply("weights", weights("banks", start))
    assert state.apply("initial_stats", stats("banks", start, kind="initial"))
    for k in range(60):
        assert state.apply("metrics", metrics("banks", start + k * MINUTE, 0.1 + k / 100))
    assert state.apply("updated_stats", stats("banks", T0 - MINUTE))
    assert state.apply("rebalance_events", event("banks", T0 - 2 * MINUTE))
    assert state.apply("weights", weights("banks", T0 - 2 * MINUTE))
    return state


# ------------------------------------------------------------------------------ records

NEWEST = T0 - MINUTE  # the newest metrics of `with_history`

# Records handed to the state directly: what the intake accepts, judged by the dashboard's own
# rules. (What the intake refuses never reaches the state: see "messages" below.)

HOSTILE_RECORDS: list[tuple[str, str, dict[str, Any], str]] = [
    ("metrics stamped 1970", "metrics", metrics("banks", 0), "stale"),
    ("metrics stamped 1970 + 1 ms", "metrics", metrics("banks", 1), "stale"),
    ("metrics older than the window", "metrics", metrics("banks", T0 - WINDOW - 1), "stale"),
    ("metrics older than the newest", "metrics", metrics("banks", NEWEST - 30_000), "out_of_order"),
    ("metrics as old as the newest", "metrics", metrics("banks", NEWEST, 9.0), "out_of_order"),
    ("weights stamped 1970", "weights", weights("banks", 0), "stale"),
    ("weights older than the newest", "weights", weights("banks", T0 - 3 * MINUTE), "out_of_order"),
    ("updated stats stamped 1970", "updated_stats", stats("banks", 0), "stale"),
    ("older updated stats", "updated_stats", stats("banks", NEWEST - 1), "out_of_order"),
    ("rebalance event stamped 1970", "rebalance_events", event("banks", 0), "stale"),
    ("metrics of an unknown portfolio", "metrics", metrics("evil", T0), "unknown_portfolio"),
    ("weights of an unknown portfolio", "weights", weights("evil", T0), "unknown_portfolio"),
    ("stats of an unknown portfolio", "updated_stats", stats("evil", T0), "unknown_portfolio"),
    ("event of an unknown portfolio", "rebalance_events", event("evil", T0), "unknown_portfolio"),
    ("weights over 513 tickers", "weights", weights("banks", T0, 513), "too_large"),
    ("stats over 513 tickers", "updated_stats", stats("banks", T0, 513), "too_large"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("role", "record", "reason"),
    [row[1:] for row in HOSTILE_RECORDS],
    ids=[row[0] for row in HOSTILE_RECORDS],
)
def test_a_hostile_record_after_real_ones_leaves_the_history_intact(
    role: Any, record: dict[str, Any], reason: str
) -> None:
    state = with_history()
    before = {pid: state.snapshot(pid) for pid in ("banks", "telecom")}
    summaries, cursor = state.summaries(), state.seq
    last_event_time = state.health_report()["last_event_time"]

    assert not state.apply(role, record)

    assert {pid: state.snapshot(pid) for pid in ("banks", "telecom")} == before
    assert state.summaries() == summaries
    assert state.seq == cursor and state.delta("banks", cursor) is None
    report = state.health_report()
    assert report["ignored"] == {reason: 1}
    assert report["invalid"] == {} and report["portfolios"] == 2
    assert report["last_event_time"] == last_event_time  # the lag is not moved either
    # And the stream goes on: the next real record appends, without a reset.
    assert state.apply("metrics", metrics("banks", T0))
    delta = state.delta("banks", cursor)
    assert delta is not None and not delta["reset"] and delta["metrics"]["t"] == [T0]


def test_the_window_is_also_relative_to_the_newest_record_shown() -> None:
    # Inside the wall clock's window, but older than the newest shown minus the window.
    state = DashboardState([PortfolioInfo("p")], limits=Limits(), clock=Clock())
    assert state.apply("rebalance_events", event("p", T0 + SKEW))
    assert not state.apply("rebalance_events", event("p", T0 + SKEW - WINDOW - 1))
    assert state.apply("rebalance_events", event("p", T0 + SKEW - WINDOW))  # the edge: kept
    assert state.health_report()["ignored"] == {"stale": 1}


@pytest.mark.parametrize(("offset", "shown"), [(-WINDOW - 1, False), (-WINDOW, True), (0, True)])
def test_the_edges_of_the_window_against_the_wall_clock(offset: int, shown: bool) -> None:
    state = DashboardState([PortfolioInfo("p")], clock=Clock())
    assert state.apply("metrics", metrics("p", T0 + offset)) is shown
    assert state.summaries()[0]["points"] == int(shown)


def test_the_window_comes_from_the_command() -> None:
    settings = load_config(example_config_path(), environ={})
    state = DashboardState.from_settings(settings, history_ms=DAY, clock=Clock())
    assert state.window == TimeWindow(DAY)
    assert state.apply("metrics", metrics("banks", T0 - DAY))
    assert not state.apply("metrics", metrics("portf1", T0 - DAY - 1))
    assert state.health_report()["ignored"] == {"stale": 1}


ROLES_OF_UNKNOWN: list[tuple[str, Callable[[str, int], dict[str, Any]]]] = [
    ("metrics", metrics),
    ("weights", weights),
    ("updated_stats", stats),
    ("rebalance_events", event),
]


@pytest.mark.parametrize(("role", "make"), ROLES_OF_UNKNOWN, ids=[r for r, _ in ROLES_OF_UNKNOWN])
def test_5000_unknown_portfolio_ids_leave_the_views_unchanged(
    role: Any, make: Callable[[str, int], dict[str, Any]]
) -> None:
    state = with_history()
    summaries = state.summaries()
    for i in range(5000):
        assert not state.apply(role, make(f"intruder-{i}", T0))
    assert state.summaries() == summaries and len(state.summaries()) == 2
    assert all(state.snapshot(f"intruder-{i}") is None for i in (0, 4999))
    report = state.health_report()
    assert report["portfolios"] == 2 and report["ignored"] == {"unknown_portfolio": 5000}


def test_dead_letter_reasons_and_rate_keys_from_the_topics_are_bounded() -> None:
    from streamfolio.dashboard.bounds import MAX_REASONS, MAX_TEXT

    state = DashboardState([PortfolioInfo("p")], clock=Clock())
    for i in range(5000):
        letter = {
            "reason": f"reason-{i}" + "x" * 1000,
            "detail": "d" * 100_000,
            "source_topic": "t" * 10_000,
            "payload": b"",
            "timestamp": T0,
            "component": "c" * 10_000,
        }
        assert state.apply("dead_letter", letter)
        state.observe_end_offsets({f"topic-{i}": i})
    report = state.health_report()
    assert len(report["dead_letters"]) <= MAX_REASONS + 1  # the first ones, then "other"
    assert report["dead_letter_total"] == 5000
    assert report["dead_letters"]["other"] == 5000 - MAX_REASONS
    assert len(report["recent_dead_letters"]) <= 8
    for letter in report["recent_dead_letters"]:
        assert all(len(letter[k]) <= MAX_TEXT for k in ("detail", "source_topic", "component"))
    assert len(report["rates"]) <= 16


# ------------------------------------------------------------------------------ messages

SETTINGS = load_config(example_config_path(), environ={})
BANKS = SETTINGS.portfolio("banks").tickers  # ATW, BCP, BOA: long-only, [0, 1] each
FITS = {"ATW": 0.5, "BCP": 0.3, "BOA": 0.2}
LEVERAGED = {"ATW": 5.0, "BCP": -4.0, "BOA": 0.0}  # sums to 1, far outside the bounds
Message = PortfolioMetrics | PortfolioStats | Weights | RebalanceEvent | DeadLetter


def m_metrics(
    t: int, sharpe: float = 0.4, pid: str = "banks", weights: dict[str, float] = FITS
) -> PortfolioMetrics:
    return PortfolioMetrics(pid, 0.2, 0.1, sharpe, t, count=10, weights=weights)


def m_weights(t: int, weights: dict[str, float] = FITS) -> Weights:
    return Weights("banks", t, weights, "rebalance", "rebalancer")


def m_stats(
    t: int, kind: str = "updated", tickers: tuple[str, ...] = BANKS, cov: Any = None
) -> PortfolioStats:
    n = len(tickers)
    cov = np.eye(n) * 0.01 if cov is None else cov
    # banks' estimator (an initial statistics record must match it; an update is the job's)
    return PortfolioStats.from_arrays(
        "banks", t, tickers, [0.001] * n, cov, count=100, kind=kind,
        estimator="ewm", half_life_bars=360.0, bar_seconds=300,
    )  # fmt: skip


def m_event(t: int) -> RebalanceEvent:
    return RebalanceEvent(
        "banks", t, "Sharpe below threshold", "rebalance", FITS, FITS,
        0.2, 0.6, 0.1, 0.15, 0.0, "optimal",
    )  # fmt: skip


def m_letter(t: int) -> DeadLetter:
    return DeadLetter("invalid", "a NaN price", "prices", b"\x00", t, "job", 0, 1, b"ATW")


def encoded(message: Message) -> bytes:
    return codec_for(type(message).__name__).encode(message.to_record())


def keyed(role: str, message: Message) -> tuple[str, bytes, bytes | None]:
    """A message as the pipeline writes it: its Avro bytes, keyed by its portfolio id."""
    key = getattr(message, "portfolio_id", "").encode() if role != "dead_letter" else None
    return role, encoded(message), key


def consumer_at(settings: Any = SETTINGS) -> tuple[DashboardState, DashboardConsumer]:
    """A state of the configured portfolios and its consumer, both judging at T0."""
    state = DashboardState.from_settings(settings, limits=Limits(metrics=100), clock=Clock())
    intake = Intake.from_settings(settings, clock=lambda: T0)
    return state, DashboardConsumer(settings, state, intake=intake)


def take(consumer: DashboardConsumer, role: str, value: bytes | None, key: bytes | None) -> bool:
    return consumer.take(getattr(SETTINGS.topics, role), value, key)


def fed() -> tuple[DashboardState, DashboardConsumer]:
    """``banks`` with an hour of real messages up to T0 - 1 minute, read through the consumer."""
    state, consumer = consumer_at()
    start = T0 - 60 * MINUTE
    history: list[tuple[str, Message]] = [
        ("weights", m_weights(start)),
        ("initial_stats", m_stats(start, kind="initial")),
        *[("metrics", m_metrics(start + k * MINUTE, 0.1 + k / 100)) for k in range(60)],
        ("updated_stats", m_stats(T0 - MINUTE)),
        ("rebalance_events", m_event(T0 - 2 * MINUTE)),
        ("weights", m_weights(T0 - 2 * MINUTE)),
        ("dead_letter", m_letter(T0 - MINUTE)),
    ]
    for role, message in history:
        assert take(consumer, *keyed(role, message)), (role, message)
    report = state.health_report()
    assert report["ignored"] == {} and report["dead_letter_total"] == 1
    return state, consumer


def _truncated(message: Message) -> bytes:
    return encoded(message)[:-3]


def _rekeyed(role: str, message: Message, key: bytes | None) -> tuple[str, bytes, bytes | None]:
    return role, encoded(message), key


PSD_NOT = np.array([[0.01, 0.02, 0.0], [0.02, 0.01, 0.0], [0.0, 0.0, 0.01]])

NAN_SHARPE = m_metrics(T0).to_record() | {"sharpRatio": float("nan")}
OTHER_TICKERS = ("ATW", "IAM", "BOA")

HOSTILE_MESSAGES: list[tuple[str, tuple[str, bytes | None, bytes | None], str]] = [
    ("metrics keyed by another", _rekeyed("metrics", m_metrics(T0), b"portf1"), "key_mismatch"),
    ("metrics without a key", _rekeyed("metrics", m_metrics(T0), None), "key_mismatch"),
    ("weights keyed by another", _rekeyed("weights", m_weights(T0), b"portf1"), "key_mismatch"),
    ("weights {ATW: 5, BCP: -4}", keyed("weights", m_weights(T0, LEVERAGED)), "invalid_weights"),
    (
        "weights missing a ticker",
        keyed("weights", m_weights(T0, {"ATW": 0.5, "BCP": 0.5})),
        "invalid_weights",
    ),
    (
        "metrics of weights {ATW: 5, BCP: -4}",
        keyed("metrics", m_metrics(T0, weights=LEVERAGED)),
        "invalid_metrics",
    ),
    ("metrics without weights", keyed("metrics", m_metrics(T0, weights={})), "invalid_metrics"),
    (
        "metrics with a NaN Sharpe ratio",
        ("metrics", codec_for("PortfolioMetrics").encode(NAN_SHARPE), b"banks"),
        "invalid_metrics",
    ),
    ("truncated metrics", ("metrics", _truncated(m_metrics(T0)), b"banks"), "undecodable"),
    ("truncated weights", ("weights", _truncated(m_weights(T0)), b"banks"), "undecodable"),
    ("garbage statistics", ("updated_stats", b"\x0agarbage", b"banks"), "undecodable"),
    ("a null value", ("metrics", None, b"banks"), "undecodable"),
    ("an unknown portfolio", keyed("metrics", m_metrics(T0, pid="evil")), "unknown_portfolio"),
    ("metrics from the far future", keyed("metrics", m_metrics(T0 + 3650 * DAY)), "future"),
    ("metrics just past the skew", keyed("metrics", m_metrics(T0 + SKEW + 1)), "future"),
    ("weights from the future", keyed("weights", m_weights(T0 + DAY)), "future"),
    ("updated stats from the future", keyed("updated_stats", m_stats(T0 + DAY)), "future"),
    ("rebalance event from the future", keyed("rebalance_events", m_event(T0 + DAY)), "future"),
    ("a dead letter stamped 9999", keyed("dead_letter", m_letter(YEAR_9999)), "future"),
    (
        "updated stats of other tickers",
        keyed("updated_stats", m_stats(T0, tickers=OTHER_TICKERS)),
        "invalid_stats",
    ),
    (
        "initial stats, not positive semi-definite",
        keyed("initial_stats", m_stats(T0, "initial", cov=PSD_NOT)),
        "invalid_stats",
    ),
]


@pytest.mark.parametrize(
    ("message", "reason"),
    [row[1:] for row in HOSTILE_MESSAGES],
    ids=[row[0] for row in HOSTILE_MESSAGES],
)
def test_a_message_the_intake_refuses_is_counted_by_its_reason_and_not_shown(
    message: tuple[str, bytes | None, bytes | None], reason: str
) -> None:
    state, consumer = fed()
    before = {pid: state.snapshot(pid) for pid in ("banks", "portf1")}
    summaries, cursor = state.summaries(), state.seq
    health = state.health_report()

    assert not take(consumer, *message)

    assert {pid: state.snapshot(pid) for pid in ("banks", "portf1")} == before
    assert state.summaries() == summaries
    assert state.seq == cursor and state.delta("banks", cursor) is None
    report = state.health_report()
    assert report["ignored"] == {reason: 1}
    assert report["last_event_time"] == health["last_event_time"]
    assert report["dead_letter_total"] == health["dead_letter_total"]
    role = message[0]
    assert report["read"][role] == health["read"].get(role, 0) + 1
    bad = report["undecodable"] if reason == "undecodable" else report["invalid"]
    assert bad.get(role, 0) == int(reason == "undecodable" or reason.startswith("invalid"))
    # And the stream goes on: the next real message appends, without a reset.
    assert take(consumer, *keyed("metrics", m_metrics(T0)))
    delta = state.delta("banks", cursor)
    assert delta is not None and not delta["reset"] and delta["metrics"]["t"] == [T0]


@pytest.mark.parametrize(("offset", "shown"), [(0, True), (SKEW, True), (SKEW + 1, False)])
def test_the_edge_of_the_future_skew(offset: int, shown: bool) -> None:
    state, consumer = consumer_at()
    assert take(consumer, *keyed("metrics", m_metrics(T0 + offset))) is shown
    assert state.summaries("banks")[0]["points"] == int(shown)


def test_a_future_message_does_not_hide_the_real_ones_that_follow() -> None:
    # A record stamped a year ahead, were it shown, would be the "newest": every real one older.
    state, consumer = consumer_at()
    assert not take(consumer, *keyed("metrics", m_metrics(T0 + 365 * DAY)))
    assert not take(consumer, *keyed("updated_stats", m_stats(T0 + 365 * DAY)))
    for k in range(3):
        assert take(consumer, *keyed("metrics", m_metrics(T0 + k)))
    assert take(consumer, *keyed("updated_stats", m_stats(T0)))
    snap = state.snapshot("banks")
    assert snap is not None and snap["metrics"]["t"] == [T0, T0 + 1, T0 + 2]
    assert snap["correlation"]["timestamp"] == T0
    assert state.health_report()["ignored"] == {"future": 2}


def test_the_future_skew_comes_from_the_settings() -> None:
    # The consumer's own intake, built from the settings, on the wall clock.
    demo = SETTINGS.model_copy(
        update={"validation": SETTINGS.validation.model_copy(update={"max_future_skew_ms": DAY})}
    )
    ahead = int(time.time() * 1000) + DAY - MINUTE  # a simulation ahead of time
    for settings, shown in ((SETTINGS, False), (demo, True)):
        state = DashboardState.from_settings(settings)
        consumer = DashboardConsumer(settings, state)
        assert take(consumer, *keyed("metrics", m_metrics(ahead))) is shown
        assert state.health_report()["ignored"] == ({} if shown else {"future": 1})


def test_messages_of_topics_not_shown_are_left_alone() -> None:
    state, consumer = consumer_at()
    assert not consumer.take(SETTINGS.topics.prices, b"\x0agarbage", None)
    assert not consumer.take("someone-elses-topic", encoded(m_metrics(T0)), b"banks")
    assert state.health_report()["read"] == {}


class FakeMessage:
    """What the consumer reads of a confluent-kafka message."""

    def __init__(self, topic: str, value: bytes | None, key: bytes | None) -> None:
        self._topic, self._value, self._key = topic, value, key

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key


def test_the_consumer_judges_the_kafka_key_of_what_it_reads() -> None:
    state, consumer = consumer_at()
    topic = SETTINGS.topics.metrics
    consumer._handle(FakeMessage(topic, encoded(m_metrics(T0)), b"portf1"))  # type: ignore[arg-type]
    consumer._handle(FakeMessage(topic, encoded(m_metrics(T0)), b"banks"))  # type: ignore[arg-type]
    assert state.summaries("banks")[0]["points"] == 1
    assert state.health_report()["ignored"] == {"key_mismatch": 1}


# ------------------------------------------------------------------------------ HTTP


@pytest.fixture
def state() -> DashboardState:
    return with_history()


@pytest.fixture
def client(state: DashboardState) -> Iterator[TestClient]:
    closing = threading.Event()
    closing.set()  # streams end at once
    with TestClient(create_app(state, closing=closing), base_url=BASE_URL) as c:
        yield c


BAD_LIMITS = [
    "\u0663",  # ARABIC-INDIC DIGIT THREE: str.isdigit() says yes, int() says 3
    "\u00b2",  # SUPERSCRIPT TWO: str.isdigit() says yes, int() fails (the 500 of issue #11)
    "\u2463",  # CIRCLED DIGIT FOUR
    "\uff11",  # FULLWIDTH DIGIT ONE
    "-1",
    "+1",
    "1e9",
    "1.0",
    "0x10",
    "abc",
    "",
    " 1",
    "1 ",
    "10001",
    "99999999999999999999",
    "9" * 5000,
]


@pytest.mark.parametrize("limit", BAD_LIMITS, ids=[repr(v) for v in BAD_LIMITS])
def test_a_bad_limit_is_a_400_with_a_reason(client: TestClient, limit: str) -> None:
    response = client.get("/api/portfolios", params={"limit": limit})
    assert response.status_code == 400, response.text
    assert "limit" in response.json()["error"] and len(response.json()["error"]) < 200


@pytest.mark.parametrize(("limit", "count"), [("0", 0), ("1", 1), ("2", 2), ("10000", 2)])
def test_a_good_limit_is_served(client: TestClient, limit: str, count: int) -> None:
    response = client.get("/api/portfolios", params={"limit": limit})
    assert response.status_code == 200 and len(response.json()["portfolios"]) == count


BAD_REQUESTS: list[tuple[str, str, dict[str, str], int]] = [
    ("unknown parameter", "/api/portfolios?limits=1", {}, 400),
    ("limit twice", "/api/portfolios?limit=1&limit=2", {}, 400),
    ("query too long", "/api/portfolios?q=" + "a" * 201, {}, 400),
    ("parameter on health", "/api/health?x=1", {}, 400),
    ("parameter on a snapshot", "/api/portfolio/banks?since=1", {}, 400),
    ("unknown portfolio", "/api/portfolio/nope", {}, 404),
    ("portfolio id too long", "/api/portfolio/" + "p" * 201, {}, 400),
    ("stream: cursor with a superscript", "/api/stream?portfolio=banks&since=ab-\u00b2", {}, 400),
    ("stream: cursor with an arabic digit", "/api/stream?portfolio=banks&since=ab-\u0663", {}, 400),
    ("stream: cursor without a token", "/api/stream?portfolio=banks&since=-1", {}, 400),
    ("stream: huge cursor", "/api/stream?portfolio=banks&since=ab-" + "9" * 40, {}, 400),
    ("stream: bad Last-Event-ID", "/api/stream", {"Last-Event-ID": "ab-\u00b2x"}, 400),
    ("stream: unknown parameter", "/api/stream?portfolio=banks&limit=1", {}, 400),
    ("stream: portfolio twice", "/api/stream?portfolio=banks&portfolio=telecom", {}, 400),
    ("stream: unknown portfolio", "/api/stream?portfolio=nope", {}, 404),
]  # fmt: skip


@pytest.mark.parametrize(
    ("url", "headers", "status"),
    [row[1:] for row in BAD_REQUESTS],
    ids=[row[0] for row in BAD_REQUESTS],
)
def test_a_bad_parameter_is_a_4xx_with_a_reason_never_a_500(
    client: TestClient, url: str, headers: dict[str, str], status: int
) -> None:
    response = client.get(url, headers={k: v.encode() for k, v in headers.items()})
    assert response.status_code == status, response.text
    assert response.json()["error"]


def test_good_streams_are_still_served(client: TestClient, state: DashboardState) -> None:
    for url in (
        "/api/stream",
        "/api/stream?portfolio=banks",
        f"/api/stream?portfolio=banks&since={state.token}-{state.seq}",
        "/api/stream?portfolio=banks&since=0000ffff-3",  # another server's cursor: a reset
    ):
        response = client.get(url)
        assert response.status_code == 200, (url, response.text)
        assert response.headers["content-type"].startswith("text/event-stream")


ROUTES = [
    "/",
    "/static/app.js",
    "/api/portfolios",
    "/api/portfolio/banks",
    "/api/health",
    "/api/stream?portfolio=banks",
    "/no/such/route",
]
REFUSED_HOSTS = [
    "evil.example",
    "evil.example:8050",
    "localhost.evil.example",
    "127.0.0.1.nip.io:8050",
    "localhost@evil.example",
    "[::2]:8050",
    "",
    "local host",
]
SERVED_HOSTS = [
    "localhost:8050",
    "localhost",
    "LocalHost:9999",
    "localhost.:8050",
    "127.0.0.1:8050",
    "127.0.0.1",
    "[::1]:8050",
    "[::1]",
]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_a_request_for_another_host_is_refused_on_every_route(
    client: TestClient, host: str, route: str
) -> None:
    response = client.get(route, headers={"Host": host})
    assert response.status_code == 421, (host, route)
    assert "not allowed" in response.text or "Host header" in response.text
    assert "banks" not in response.text  # nothing of the portfolios
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("host", SERVED_HOSTS)
def test_a_request_for_a_local_host_is_served(client: TestClient, host: str) -> None:
    response = client.get("/api/portfolio/banks", headers={"Host": host})
    assert response.status_code == 200, host
    assert response.json()["id"] == "banks"


def test_the_test_clients_own_host_is_refused_by_default(state: DashboardState) -> None:
    with TestClient(create_app(state)) as c:  # Host: testserver
        assert c.get("/api/health").status_code == 421


def test_a_websocket_for_another_host_is_refused(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as refused,
        client.websocket_connect("/api/stream", headers={"Host": "evil.example"}),
    ):
        pass  # pragma: no cover
    assert refused.value.code == 1008


def test_more_hosts_can_be_allowed_and_star_allows_any(state: DashboardState) -> None:
    app = create_app(state, hosts=allowed_hosts("192.168.1.5", ["dash.example"]))
    with TestClient(app, base_url=BASE_URL) as c:
        for host in ("dash.example:8050", "DASH.example", "192.168.1.5:8050", "localhost:1"):
            assert c.get("/api/health", headers={"Host": host}).status_code == 200, host
        assert c.get("/api/health", headers={"Host": "evil.example"}).status_code == 421
    with TestClient(create_app(state, hosts=["*"]), base_url="http://any.example") as c:
        assert c.get("/api/health").status_code == 200


def test_allowed_hosts_parsing() -> None:
    assert allowed_hosts() == frozenset({"localhost", "127.0.0.1", "::1"})
    assert "::" not in allowed_hosts("::") and "0.0.0.0" not in allowed_hosts("0.0.0.0")
    assert "fe80::1" in allowed_hosts("fe80::1") and "fe80::1" in allowed_hosts(None, ["[fe80::1]"])
    assert host_name("[::1]:8050") == "::1" and host_name("evil.example:80:80") is None
    with pytest.raises(UsageError, match="not a host name"):
        allowed_hosts(None, ["evil example"])


def test_every_response_carries_security_headers_and_no_cors(client: TestClient) -> None:
    origin = {"Origin": "http://evil.example"}
    for route in ("/", "/static/app.js", "/api/health", "/api/portfolios?limit=x"):
        response = client.get(route, headers=origin)
        assert response.headers["x-content-type-options"] == "nosniff", route
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, route
        assert "unsafe-eval" not in csp and "'unsafe-inline'" not in csp.split("style-src")[0]
        assert not any(k.lower().startswith("access-control-") for k in response.headers), route
    preflight = client.options(
        "/api/health", headers={**origin, "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


# ------------------------------------------------------------------------------ command


def cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(dashboard_command)
    return app


def test_the_command_rejects_a_malformed_allowed_host() -> None:
    result = CliRunner().invoke(cli(), ["--allowed-host", "evil example", "--port", "0"])
    assert result.exit_code == 2 and "not a host name" in result.output


def test_the_allowed_hosts_also_come_from_the_environment() -> None:
    env = {"STREAMFOLIO_DASHBOARD_ALLOWED_HOSTS": "dash.example bad@host"}
    result = CliRunner().invoke(cli(), ["--port", "0"], env=env)
    assert result.exit_code == 2 and "'bad@host'" in result.output


def test_a_real_server_refuses_another_host_and_serves_localhost(state: DashboardState) -> None:
    # uvicorn, not the TestClient: raw requests, the Host header exactly as a browser sends it.
    closing = threading.Event()
    app = create_app(state, closing=closing, interval_s=0.01)
    server = _Server(uvicorn.Config(app, log_config=None, log_level="warning"), closing)
    with listen("127.0.0.1", 0) as sock:
        port = sock.getsockname()[1]
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
        thread.start()
        try:
            for _ in range(500):
                if server.started:
                    break
                time.sleep(0.01)
            answers = {}
            for host in ("evil.example", f"localhost:{port}", f"127.0.0.1:{port}"):
                for route in ("/api/portfolio/banks", "/api/stream?portfolio=banks"):
                    answers[host, route] = _raw_get(port, route, host)
        finally:
            server.request_exit()
            thread.join(10)
    for (host, route), (status, headers, body) in answers.items():
        if host == "evil.example":
            assert status == 421 and b"banks" not in body, (host, route)
        else:
            assert status == 200, (host, route, body)
        assert headers["x-content-type-options"] == "nosniff"


def _raw_get(port: int, route: str, host: str) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(f"GET {route} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        conn.settimeout(0.3)
        data = b""
        with contextlib.suppress(TimeoutError):  # a stream never ends by itself
            while chunk := conn.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body
