"""Fuzzing the exchange client with mutated real answers: byte flips, truncations, and JSON values
replaced at random places. Whatever the bytes, the parsers give the client's source error, or an
answer whose bad rows are rejects with a reason and whose good rows the poller can publish."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from streamfolio.feeds import cse
from streamfolio.feeds.cse import (
    BoardSnapshot,
    CseClient,
    CsePoller,
    CseSourceError,
    HistoryPage,
    HttpResponse,
    IndexBar,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "cse"
MAX_MS = 253_402_214_399_999
REASONS = {"missing_field", "bad_price", "bad_time", "bad_row"}
KINDS = {"payload", "layout"}
TARGETS = [
    ("live-market-actions_2026-10-09_excerpt.html", "gen2"),
    ("live-market-actions_strings.json", "gen2"),
    ("live-market-actions_empty.html", "gen2"),
    ("live-market-actions_renamed-field.json", "gen2"),
    ("gen1_dashboard-ticker_strings.json", "gen1"),
    ("gen1_dashboard-ticker_numbers.json", "gen1"),
    ("gen1_dashboard-ticker_renamed-field.json", "gen1"),
    ("stock-historical_ATW_2026-09-08_2026-10-08.json", "history"),
    ("stock-historical_MDP_strings.json", "history"),
    ("indices-historical_MASI.json", "index"),
]
BODIES = {name: (FIXTURES / name).read_bytes() for name, _ in TARGETS}
_SCRIPT = re.compile(rb'(drupal-settings-json">)(.*?)(</script>)', re.S)


# --------------------------------------------------------------------------------------------
# What must come out


def check(parser: str, body: bytes) -> str:
    """Parse ``body``; only a :class:`CseSourceError` may be raised, and what is returned must be
    usable: rejects with a known reason, quotes that make valid ticks through the poller.

    Returns what happened, for Hypothesis' statistics."""
    try:
        if parser == "gen2":
            result: object = cse.parse_live_board_gen2(body)
        elif parser == "gen1":
            result = cse.parse_live_board_gen1(body)
        elif parser == "history":
            result = cse.parse_stock_history(body, ticker="ATW")
        else:
            result = cse.parse_index_history(body)
    except CseSourceError as exc:
        assert exc.kind in KINDS and str(exc).strip()
        return f"source error: {exc.kind}"
    if isinstance(result, BoardSnapshot):
        check_board(result, parser, body)
    elif isinstance(result, HistoryPage):
        assert all(bar.close > 0 and math.isfinite(bar.close) for bar in result.bars)
        assert all(isinstance(reason, str) for reason in result.skipped)
        cse.merge_daily_bars(result.bars)
    else:
        assert isinstance(result, list)
        assert all(isinstance(bar, IndexBar) and 0 < bar.close < math.inf for bar in result)
    return f"read: {type(result).__name__}"


def check_board(board: BoardSnapshot, parser: str, body: bytes) -> None:
    for reject in board.rejects:
        assert reject.reason in REASONS and reject.detail
        reject.to_dead_letter(0)
    for quote in board.quotes:
        assert 0 < quote.price < math.inf and 0 <= quote.event_time <= MAX_MS
    tickers = [quote.ticker for quote in board.quotes]
    assert len(tickers) == len(set(tickers)), "one quote per instrument"
    # The same body through the client and the poller, twice (the second poll de-duplicates).
    client = CseClient(lambda _: HttpResponse(200, body), api=parser, retries=0)  # type: ignore[arg-type]
    poller = CsePoller(client, market_hours_only=False)
    for _ in range(2):
        result = poller.poll_once()
        assert all(0 < tick.price < math.inf for tick in result.ticks)


# --------------------------------------------------------------------------------------------
# Mutations


@st.composite
def byte_flips(draw: st.DrawFn, body: bytes) -> bytes:
    data = bytearray(body)
    # Half of the flips land in a value (a digit or a letter): the JSON stays readable more often.
    inside = [i for i, byte in enumerate(body) if chr(byte).isalnum()]
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.sampled_from(inside) | st.integers(0, len(data) - 1))
        data[position] = draw(st.sampled_from(b'09-.,eEN"[]{}: \xff') | st.integers(0, 255))
    return bytes(data)


@st.composite
def truncations(draw: st.DrawFn, body: bytes) -> bytes:
    start = draw(st.integers(0, len(body)))
    end = draw(st.integers(start, len(body)))
    # a cut end, a cut start, or a hole in the middle
    return draw(st.sampled_from([body[:start], body[start:], body[:start] + body[end:]]))


KEYS = [
    "live_market",
    "actions",
    "session",
    "timestamp",
    "time",
    "h",
    "m",
    "s",
    "status",
    "symbol",
    "dernierCours",
    "quantite",
    "nbTransactions",
    "statut",
    "fr",
    "data",
    "values",
    "ticker",
    "field_cours_courant",
    "field_last_traded_time",
    "field_date_application",
    "totalCount",
    "items",
    "seance",
    "valeur",
    "indices",
    "MASI",
    "achat",
    "prix",
]
SPECIAL: list[Any] = [
    1e20,
    -1e20,
    "NaN",
    "Infinity",
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    -(10**400),
    0,
    -1,
    "",
    "-",
    "1e400",
    "670,10",
    "1 830",
    1791543600,
    1791543600000,
    "2025-06-20T14:59:32",
    "10000-01-01T00:00:00",
    "14:59:32",
    "31/02/2026",
    "99/99/9999",
    {"fr": {"fr": "T"}},
    {"h": 1e30, "m": -1, "s": "x"},
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(SPECIAL),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


replacements = st.one_of(json_values, st.integers(1, 200).map(nested))


def places(doc: object) -> list[tuple[Any, ...]]:
    """Every path in ``doc`` (a tuple of keys and indices), the root included."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], object]] = [((), doc)]
    while stack:
        path, value = stack.pop()
        found.append(path)
        if isinstance(value, dict):
            stack.extend(((*path, key), child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend(((*path, i), child) for i, child in enumerate(value))
    return found


def put(doc: object, path: tuple[Any, ...], value: object) -> object:
    if not path:
        return value
    parent: Any = doc
    for step in path[:-1]:
        parent = parent[step]
    parent[path[-1]] = value
    return doc


@st.composite
def value_replacements(draw: st.DrawFn, body: bytes) -> bytes:
    """The answer's JSON with 1 to 3 values, anywhere, replaced by random JSON values."""
    script = _SCRIPT.search(body)
    text = script.group(2) if script else body
    doc: object = copy.deepcopy(json.loads(text))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(sorted(places(doc), key=repr)))
        # A copy: sampled_from hands out the same SPECIAL dict every time, and a later put()
        # into it would change SPECIAL (flaky data) or make it contain itself (a cycle that
        # places() follows until memory runs out).
        doc = put(doc, path, copy.deepcopy(draw(replacements)))
    mutated = json.dumps(doc).encode()
    if script is None:
        return mutated
    return body[: script.start(2)] + mutated + body[script.end(2) :]


# --------------------------------------------------------------------------------------------
# The properties


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(target=st.sampled_from(TARGETS), data=st.data())
def test_byte_flips_never_escape_the_source_error(
    target: tuple[str, str], data: st.DataObject
) -> None:
    name, parser = target
    event(check(parser, data.draw(byte_flips(BODIES[name]))))


@FUZZ
@given(target=st.sampled_from(TARGETS), data=st.data())
def test_truncations_never_escape_the_source_error(
    target: tuple[str, str], data: st.DataObject
) -> None:
    name, parser = target
    event(check(parser, data.draw(truncations(BODIES[name]))))


@FUZZ
@given(target=st.sampled_from(TARGETS), data=st.data())
def test_replaced_json_values_never_escape_the_source_error(
    target: tuple[str, str], data: st.DataObject
) -> None:
    name, parser = target
    event(check(parser, data.draw(value_replacements(BODIES[name]))))


def test_the_harness_reads_every_fixture() -> None:
    """A guard on the harness: each fixture's JSON is found, and the unmutated answer passes."""
    for name, parser in TARGETS:
        body = BODIES[name]
        script = _SCRIPT.search(body)
        assert json.loads(script.group(2) if script else body) is not None
        assert check(parser, body).startswith(
            "source error: layout" if "renamed" in name else "read"
        )
