"""Property tests: every valid message survives bytes unchanged; no bytes crash a decoder."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamfolio.errors import SchemaError
from streamfolio.messages import (
    PortfolioStats,
    PriceTick,
    Weights,
    bourse_from_price_tick,
    parse_price,
    price_tick_from_bourse,
)
from streamfolio.schemas import schema_names
from streamfolio.serde import codec_for

MAX_MS = 253_402_214_399_999

tickers = st.text(min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=5e-324, allow_nan=False, allow_infinity=False)
epoch_ms = st.integers(min_value=0, max_value=MAX_MS)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)

price_ticks = st.builds(
    PriceTick,
    ticker=tickers,
    price=positive,
    event_time=epoch_ms,
    volume=st.none() | st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
    source=st.text(max_size=8),
    sequence=st.none() | longs,
)

weights = st.builds(
    Weights,
    portfolio_id=tickers,
    timestamp=epoch_ms,
    weights=st.dictionaries(tickers, finite, min_size=1, max_size=12),
    reason=st.text(max_size=12),
    source=st.text(max_size=12),
)


@st.composite
def portfolio_stats(draw: st.DrawFn) -> PortfolioStats:
    names = draw(st.lists(tickers, min_size=1, max_size=8, unique=True))
    n = len(names)
    entries = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)
    lower = [[draw(entries) for _ in range(i)] for i in range(n)]
    diagonal = [draw(st.floats(min_value=0.0, max_value=1e3)) for _ in range(n)]
    cov = [
        [diagonal[i] if i == j else lower[max(i, j)][min(i, j)] for j in range(n)] for i in range(n)
    ]
    estimator = draw(st.sampled_from(["welford", "ewm"]))
    return PortfolioStats.from_arrays(
        draw(tickers),
        draw(epoch_ms),
        names,
        [draw(finite) for _ in range(n)],
        cov,
        count=draw(st.integers(min_value=0, max_value=2**62)),
        estimator=estimator,
        half_life_bars=draw(st.floats(min_value=0.01, max_value=1e6))
        if estimator == "ewm"
        else None,
        bar_seconds=draw(st.none() | st.integers(min_value=1, max_value=86_400)),
        kind=draw(st.sampled_from(["initial", "updated"])),
    )


@settings(max_examples=300)
@given(price_ticks)
def test_price_tick_round_trip(tick: PriceTick) -> None:
    codec = codec_for("PriceTick")
    assert PriceTick.from_record(codec.decode(codec.encode(tick.to_record()))) == tick


@settings(max_examples=150)
@given(weights)
def test_weights_round_trip_keeps_order(message: Weights) -> None:
    codec = codec_for("Weights")
    back = Weights.from_record(codec.decode(codec.encode(message.to_record())))
    assert back == message
    assert list(back.weights) == list(message.weights)


@settings(max_examples=100, deadline=None)
@given(portfolio_stats())
def test_portfolio_stats_round_trip(stats: PortfolioStats) -> None:
    codec = codec_for("PortfolioStats")
    back = PortfolioStats.from_record(codec.decode(codec.encode(stats.to_record())))
    assert back == stats


@settings(max_examples=50)
@given(st.sampled_from([math.nan, math.inf, -math.inf]), st.sampled_from(["price", "volume"]))
def test_avro_carries_non_finite_doubles_but_messages_reject_them(bad: float, field: str) -> None:
    record: dict[str, Any] = {"ticker": "ATW", "price": 1.0, "event_time": 0, field: bad}
    codec = codec_for("PriceTick")
    decoded = codec.decode(codec.encode(record))
    assert math.isnan(decoded[field]) if math.isnan(bad) else decoded[field] == bad
    with pytest.raises(SchemaError, match=f"PriceTick.{field} is not finite"):
        PriceTick.from_record(decoded)


@pytest.mark.parametrize("name", schema_names())
@settings(max_examples=150)
@given(data=st.binary(max_size=64))
def test_any_bytes_decode_or_raise_schema_error(name: str, data: bytes) -> None:
    try:
        record = codec_for(name).decode(data)
    except SchemaError as exc:
        assert exc.reason.startswith("undecodable: ")
    else:
        assert isinstance(record, dict)


@settings(max_examples=200)
@given(price_ticks)
def test_bourse_round_trip(tick: PriceTick) -> None:
    if not tick.ticker.strip():
        return  # a quote with a blank ticker is rejected, tested elsewhere
    back = price_tick_from_bourse(bourse_from_price_tick(tick), source=tick.source)
    assert back == PriceTick(tick.ticker.strip(), tick.price, tick.event_time, None, tick.source)


@settings(max_examples=200)
@given(positive)
def test_parse_price_reads_python_float_text(value: float) -> None:
    assert parse_price(repr(value)) == value
    assert parse_price(f"{value:.17g}".replace(".", ",")) == value
