"""The job's keyed state: versioned bytes that restore exactly, never a pickle.

``tests/fixtures/state/*-v1.bin`` were written by state version 1. They must keep restoring in
every later version (add the next version's fixtures next to them when the format changes).
"""

from __future__ import annotations

import math
import pickle
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.core.portfolio import PortfolioMonitor, PortfolioSpec
from streamfolio.core.returns import BarReturns
from streamfolio.errors import DataError
from streamfolio.flink.state import (
    StateVersionError,
    dump_open_bar,
    dump_portfolio_state,
    load_open_bar,
    load_portfolio_state,
    state_type,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "state"
SPEC = PortfolioSpec("p1", ("AAA", "BBB"), bar_ms=1_000, periods_per_year=1_000)


def test_a_version_1_portfolio_state_restores_and_carries_on() -> None:
    state = load_portfolio_state((FIXTURES / "portfolio-v1.bin").read_bytes())
    assert state["seeded"] is True and state["seq"] == 3
    assert state["bars"] == {3: ({"AAA": 10.5, "BBB": 19.5}, {"AAA": 0.0488, "BBB": -0.0253})}
    (entry,) = state["pending"]
    assert entry[:4] == [5000, 1, 3, "weights"]
    assert entry[5] == (b"\x00\x01payload", 2, 17, b"p1")
    monitor = PortfolioMonitor.from_state(SPEC, state["monitor"])
    assert monitor.moments.n == 52 and monitor.seed_timestamp_ms == 0
    assert monitor.metrics() is None  # the last metrics were emitted before the checkpoint
    stats = monitor.on_bar(BarReturns(3, *state["bars"][3]))
    assert stats is not None and stats["count"] == 53
    metrics = monitor.metrics()
    assert metrics is not None and math.isfinite(metrics["sharpRatio"])


def test_a_version_1_open_bar_restores() -> None:
    assert load_open_bar((FIXTURES / "open-bar-v1.bin").read_bytes()) == (
        {"AAA": 10.0, "BBB": 20.0},
        {"BBB": 0.01},
    )


def test_state_of_an_unknown_version_is_refused_with_what_to_do() -> None:
    data = (FIXTURES / "portfolio-v1.bin").read_text().replace("sf-state/1", "sf-state/9", 1)
    with pytest.raises(StateVersionError, match=r"version '9'.*reads versions up to 1"):
        load_portfolio_state(data)


def test_pickled_state_of_an_older_job_is_never_unpickled() -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("unpickled!",))

    with pytest.raises(StateVersionError, match="pickled state is not restored"):
        load_portfolio_state(pickle.dumps({"seeded": True, "x": Boom()}))


def test_a_monitor_round_trips_to_the_same_bits() -> None:
    monitor = PortfolioMonitor(SPEC)
    monitor.set_weights({"AAA": 0.3, "BBB": 0.7}, 0)
    for k, (a, b) in enumerate([(0.1, 0.2), (1 / 3, -2 / 7), (1e-300, 5e-310)]):
        monitor.on_bar(BarReturns(k, {"AAA": 1.0, "BBB": 1.0}, {"AAA": a, "BBB": b}))
    state = {"seeded": True, "seq": 0, "pending": [], "bars": {}, "monitor": monitor.to_state()}
    assert load_portfolio_state(dump_portfolio_state(state)) == state


def test_a_state_that_could_not_restore_exactly_is_never_written() -> None:
    monitor = PortfolioMonitor(SPEC)
    for k, (a, b) in enumerate([(0.1, 0.2), (1.0, 5e300), (2.0, -5e300)]):  # beyond float64
        monitor.on_bar(BarReturns(k, {"AAA": 1.0, "BBB": 1.0}, {"AAA": a, "BBB": b}))
    state = {"seeded": True, "seq": 0, "pending": [], "bars": {}, "monitor": monitor.to_state()}
    with pytest.raises(DataError, match="NaN or an infinity"):
        dump_portfolio_state(state)


@settings(max_examples=100, deadline=None)
@given(
    closes=st.dictionaries(
        st.text(min_size=1, max_size=8), st.floats(allow_nan=False, allow_infinity=False)
    ),
    bar=st.integers(min_value=0, max_value=2**53),
)
def test_open_bars_round_trip_exactly(closes: dict[str, float], bar: int) -> None:
    assert load_open_bar(dump_open_bar((closes, closes))) == (closes, closes)
    state = {"seeded": False, "seq": 0, "pending": [], "bars": {bar: (closes, {})}, "monitor": None}
    assert load_portfolio_state(dump_portfolio_state(state)) == state


def test_the_state_type_passes_values_through_pyflink_thread_mode_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Thread mode converts state values with these converters: a ``PRIMITIVE_ARRAY(BYTE)``
    state fails on an empty value and turns bytes into a tuple of ints; ``STRING`` does not.
    (The module needs pemja, the embedded interpreter's bridge, only for window classes.)"""
    monkeypatch.setitem(sys.modules, "pemja", types.SimpleNamespace(findClass=lambda _: None))
    monkeypatch.delitem(sys.modules, "pyflink.fn_execution.embedded.converters", raising=False)
    from pyflink.fn_execution.embedded.converters import from_type_info

    converter = from_type_info(state_type())
    text = dump_open_bar(({"AAA": 1.5}, {}))
    assert converter.to_internal(None) is None
    assert converter.to_internal(text) == text and converter.to_external(text) == text


@pytest.mark.parametrize("estimator", ["welford", "ewm"])
def test_each_estimator_round_trips_to_the_same_bits(estimator: str) -> None:
    spec = PortfolioSpec(
        "p1",
        ("AAA", "BBB", "CCC"),
        bar_ms=1_000,
        periods_per_year=1_000,
        estimator=estimator,  # type: ignore[arg-type]
        half_life_bars=5.0 if estimator == "ewm" else None,
    )
    monitor = PortfolioMonitor(spec)
    for k, returns in enumerate([(0.1, 0.2, -0.1), (1 / 3, -2 / 7, 0.0), (0.01, 0.02, 0.03)]):
        monitor.on_bar(
            BarReturns(
                k, dict.fromkeys(spec.tickers, 1.0), dict(zip(spec.tickers, returns, strict=True))
            )
        )
    state = {"seeded": True, "seq": 0, "pending": [], "bars": {}, "monitor": monitor.to_state()}
    assert load_portfolio_state(dump_portfolio_state(state)) == state
