"""The validation helpers every message runs on construction, and their limits.

Each helper names the message and field it checks (``where``, e.g. ``"PriceTick.price"``) and
raises :class:`~streamfolio.errors.SchemaError` with that name and the problem, so a dead letter
says what was wrong. They are internal to :mod:`streamfolio.messages`; only
:data:`SYMMETRY_TOLERANCE` is re-exported.

>>> check_number("PriceTick.price", float("inf"))
Traceback (most recent call last):
...
streamfolio.errors.SchemaError: PriceTick.price is not finite: inf
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NoReturn

import numpy as np

from streamfolio.core.types import FloatArray
from streamfolio.errors import SchemaError

SYMMETRY_TOLERANCE: Final = 1e-12
"""Largest relative asymmetry accepted in a covariance matrix (round-off, not data)."""

# 9999-12-30T23:59:59.999Z: a day short of datetime's range, so any zone's local date still exists
MAX_EPOCH_MS: Final = 253_402_214_399_999
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS: Final = timedelta(milliseconds=1)


def fail(where: str, problem: str) -> NoReturn:
    """Raise the :class:`~streamfolio.errors.SchemaError` ``"<where> <problem>"``."""
    raise SchemaError(f"{where} {problem}")


def check_number(where: str, value: object, *, minimum: float | None = None) -> None:
    """``value`` is a finite int or float (not a bool), at least ``minimum`` if given."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(where, f"must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        fail(where, f"is not finite: {value!r}")
    if minimum is not None and value < minimum:
        fail(where, f"must be >= {minimum}, got {value!r}")


def check_int(where: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` is an int (not a bool), at least ``minimum`` if given; returns it."""
    if isinstance(value, bool) or not isinstance(value, int):
        fail(where, f"must be an integer, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        fail(where, f"must be >= {minimum}, got {value!r}")
    return value


def check_text(where: str, value: object, *, empty: bool = True) -> None:
    """``value`` is a string, and not empty unless ``empty``."""
    if not isinstance(value, str):
        fail(where, f"must be a string, got {type(value).__name__}")
    if not empty and not value:
        fail(where, "must not be empty")


def check_timestamp(where: str, value: object) -> None:
    """``value`` is an int of epoch milliseconds in 0..:data:`MAX_EPOCH_MS`."""
    if not 0 <= check_int(where, value) <= MAX_EPOCH_MS:
        fail(where, f"is not an epoch-millisecond time in 1970..9999: {value!r}")


def weight_map(where: str, value: object, *, empty: bool = True) -> dict[str, float]:
    """``value`` as a dict of non-empty ticker to finite number (not empty unless ``empty``)."""
    if not isinstance(value, Mapping):
        fail(where, f"must be a mapping of ticker to number, got {type(value).__name__}")
    if not empty and not value:
        fail(where, "must not be empty")
    for ticker, weight in value.items():
        check_text(f"{where} key", ticker, empty=False)
        check_number(f"{where}[{ticker!r}]", weight)
    return dict(value)


def missing_field(cls: type, exc: KeyError) -> SchemaError:
    """The error of a ``cls`` record lacking the field of ``exc`` (for ``from_record``)."""
    return SchemaError(f"{cls.__name__} record has no field {exc.args[0]!r}")


def set_field(obj: object, name: str, value: object) -> None:
    """Set an attribute of a frozen dataclass (to normalise an input in ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def same_keys(where: str, mapping: Mapping[str, Any], tickers: tuple[str, ...]) -> None:
    """``mapping`` has exactly the keys ``tickers``."""
    keys = set(mapping)
    if keys != set(tickers):
        missing = [t for t in tickers if t not in keys]
        extra = sorted(keys - set(tickers))
        fail(where, f"does not match the tickers: missing {missing}, extra {extra}")


def check_covariance(
    where: str, tickers: tuple[str, ...], cov: tuple[tuple[Any, ...], ...]
) -> FloatArray:
    """``cov`` as a float matrix, if finite, with non-negative diagonal and symmetric."""
    for i, row in enumerate(cov):
        for j, c in enumerate(row):
            if type(c) is not float:  # ints pass; anything else is named
                check_number(f"{where}.covariance[{tickers[i]!r}][{tickers[j]!r}]", c)
    m = np.array(cov, dtype=np.float64)
    for i, j in np.argwhere(~np.isfinite(m))[:1]:
        fail(f"{where}.covariance[{tickers[i]!r}][{tickers[j]!r}]", f"is not finite: {cov[i][j]!r}")
    diagonal = np.diag(m)
    for i in np.flatnonzero(diagonal < 0)[:1]:
        fail(
            f"{where}.covariance[{tickers[i]!r}][{tickers[i]!r}]",
            f"is a negative variance: {cov[i][i]!r}",
        )
    with np.errstate(over="ignore", invalid="ignore"):  # huge entries: an infinite scale is fine
        # Relative to each pair's own scale, so round-off near zero correlation passes.
        scale = np.maximum(
            np.maximum(np.abs(m), np.abs(m.T)), np.sqrt(np.outer(diagonal, diagonal))
        )
        asymmetric = np.tril(np.abs(m - m.T) > SYMMETRY_TOLERANCE * scale, -1)
    for i, j in np.argwhere(asymmetric)[:1]:
        fail(
            f"{where}.covariance",
            f"is not symmetric: [{tickers[i]!r}][{tickers[j]!r}]={cov[i][j]!r} "
            f"but [{tickers[j]!r}][{tickers[i]!r}]={cov[j][i]!r}",
        )
    return m
