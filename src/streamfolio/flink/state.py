"""The job's keyed state as versioned, typed text: JSON under a version header, never a pickle.

A pickle in a checkpoint is code that runs at restore (anyone who can write the checkpoint
folder could run anything), and its format follows the Python version. Each value here is
``sf-state/<version>`` and a newline, then JSON (orjson: floats are written in their shortest
exact form, so a restore gives back the same bits; bytes inside as base64). A reader knows every
version up to its own and refuses a newer or unknown one with :class:`StateVersionError`.

The values are Flink ``STRING`` state (:func:`state_type`), not byte arrays: in thread mode
PyFlink converts a ``PRIMITIVE_ARRAY(BYTE)`` state value element by element, and fails on an
empty one (``tests/flink/test_keyed_state.py`` pins the converter's behaviour).

Versions: 1, the first. ``tests/flink/test_keyed_state.py`` keeps a value of each past version and
checks that it still restores.

>>> data = dump_portfolio_state({"seeded": True, "seq": 1, "pending": [], "bars": {7: ({"A": 1.5},
...                              {"A": 0.01})}, "monitor": None})
>>> data[:11]
'sf-state/1\\n'
>>> load_portfolio_state(data)["bars"]
{7: ({'A': 1.5}, {'A': 0.01})}
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import orjson
import pybase64  # SIMD base64: a shard's panels are megabytes, saved every bar

from streamfolio.errors import DataError

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation

__all__ = [
    "STATE_VERSION",
    "OpenBar",
    "PortfolioState",
    "StateVersionError",
    "dump_member_bars",
    "dump_open_bar",
    "dump_panels",
    "dump_portfolio_state",
    "load_member_bars",
    "load_open_bar",
    "load_panels",
    "load_portfolio_state",
    "state_type",
]

STATE_VERSION: Final = 1
"""The version this job writes; it reads every version up to it."""
_HEADER: Final = "sf-state/"
_MATRICES: Final = frozenset({"m2", "scaled"})
"""The n×n matrices of the estimators' states (Welford, EW), kept as packed float64."""
_NOT_FINITE: Final = (
    "keyed state holds a NaN or an infinity, which it cannot restore exactly; the inputs that "
    "made it should have been refused (a bug: please report it)"
)

PortfolioState = dict[str, Any]
"""What :class:`~streamfolio.flink.operators.PortfolioShards` keeps per portfolio: ``seeded``
(bool), ``seq`` (control messages received), ``pending`` (control messages waiting for their
time: ``[timestamp, rank, seq, kind, record, [payload, partition, offset, key]]``), ``bars``
(bar index → (closes, returns) not processed yet), ``monitor``
(``PortfolioMonitor.to_state()`` or None: none yet, or held in a panel, ``in_panel``)."""
PanelArrays = tuple[list[str], dict[str, Any]]
"""A :class:`~streamfolio.core.panel.MonitorPanel`'s ``to_arrays()``: its portfolios and rows."""
OpenBar = tuple[dict[str, float], dict[str, float]]
"""What :class:`~streamfolio.flink.prices.GatherBars` keeps per open bar: closes and returns
by ticker."""


class StateVersionError(DataError):
    """Keyed state written in a format this job does not read."""


def state_type() -> TypeInformation:
    """Flink's type of every keyed state value written here: ``STRING``."""
    from pyflink.common import Types

    return Types.STRING()


def _dump(value: Any, *, finite: bool = False) -> str:
    """``value`` as versioned text. ``finite``: the caller checked that it holds no NaN or
    infinity (its floats are all in arrays packed by :func:`_pack_array`)."""
    body = orjson.dumps(value)
    if not finite and b"null" in body:
        # orjson writes NaN and infinities as null, which would restore as another value: only
        # then (most nulls are fields not set yet) is the state checked the slow way.
        _check_finite(value)
    return f"{_HEADER}{STATE_VERSION}\n{body.decode('utf-8')}"


def _check_finite(value: Any) -> None:
    """Raise :class:`DataError` if ``value`` holds a NaN or an infinity. Only the parts whose
    JSON holds a null are looked into: a portfolio waiting for its first statistics has nulls
    in its few control messages, not in the bars piling up next to them, which are most of it
    (checking all of it with ``json.dumps`` made every bar's save slower as they piled up: the
    10,000-portfolio start never caught up, BENCHMARKS.md).

    >>> _check_finite({"bars": [[1, {"A": 1.5}]], "pending": [None, 2.0]})
    >>> _check_finite({"bars": [[1, {"A": float("nan")}]], "monitor": None})
    Traceback (most recent call last):
    ...
    streamfolio.errors.DataError: keyed state holds a NaN or an infinity, ...
    """
    parts: Any
    if isinstance(value, dict):
        parts = value.values()
    elif isinstance(value, list | tuple):
        parts = value
    else:
        if isinstance(value, float) and not math.isfinite(value):
            raise DataError(_NOT_FINITE)
        return
    for part in parts:
        if isinstance(part, dict | list | tuple):
            if b"null" in orjson.dumps(part):
                _check_finite(part)
        elif isinstance(part, float) and not math.isfinite(part):
            raise DataError(_NOT_FINITE)


def _load(data: str | bytes, what: str) -> Any:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else data
    header, _, body = text.partition("\n")
    if not header.startswith(_HEADER):
        raise StateVersionError(
            f"{what} state is not in streamfolio's state format (it starts {header[:16]!r}); "
            "it was written by a job before state version 1 (pickled state is not restored): "
            "start the job without --from-checkpoint"
        )
    version = header[len(_HEADER) :]
    if version != str(STATE_VERSION):  # the only version so far: older ones are converted here
        raise StateVersionError(
            f"{what} state has version {version!r}; this job reads versions up to "
            f"{STATE_VERSION}: restore it with the streamfolio release that wrote it, or start "
            "without --from-checkpoint"
        )
    return orjson.loads(body)


def _pack(matrix: Any) -> dict[str, Any]:
    """A float matrix (nested lists, or an array: ``PortfolioMonitor.to_state(arrays=True)``)
    as base64 of its little-endian float64 bytes (exact, and compact)."""
    array = np.asarray(matrix, dtype="<f8")
    if not np.isfinite(array).all():
        raise DataError(_NOT_FINITE)
    return {"f64": pybase64.b64encode(array.tobytes()).decode("ascii"), "shape": list(array.shape)}


def _unpack(packed: dict[str, Any]) -> list[list[float]]:
    array = np.frombuffer(pybase64.b64decode(packed["f64"]), dtype="<f8")
    result: list[list[float]] = array.reshape(packed["shape"]).tolist()
    return result


def _b64(data: bytes | None) -> str | None:
    return None if data is None else pybase64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else pybase64.b64decode(text)


def _portfolio_json(state: PortfolioState) -> dict[str, Any]:
    pending = [
        [*entry[:5], [_b64(payload), partition, offset, _b64(key)]]
        for entry in state["pending"]
        for payload, partition, offset, key in (entry[5],)
    ]
    bars = [[k, closes, returns] for k, (closes, returns) in state["bars"].items()]
    monitor = state["monitor"]
    if monitor is not None:  # the n×n matrix as float64 bytes: a third of its JSON text
        moments = monitor["moments"]
        packed = {k: _pack(v) for k, v in moments.items() if k in _MATRICES}
        monitor = {**monitor, "moments": {**moments, **packed}}
    return {**state, "pending": pending, "bars": bars, "monitor": monitor}


def _portfolio_from_json(state: PortfolioState) -> PortfolioState:
    state["pending"] = [
        [*entry[:5], (_unb64(origin[0]), origin[1], origin[2], _unb64(origin[3]))]
        for entry in state["pending"]
        for origin in (entry[5],)
    ]
    state["bars"] = {int(k): (closes, returns) for k, closes, returns in state["bars"]}
    monitor = state["monitor"]
    if monitor is not None:
        moments = monitor["moments"]
        for k in _MATRICES.intersection(moments):
            if isinstance(moments[k], dict):
                moments[k] = _unpack(moments[k])
    return state


def dump_portfolio_state(state: PortfolioState) -> str:
    """A portfolio's state as versioned text."""
    return _dump(_portfolio_json(state))


def load_portfolio_state(data: str | bytes) -> PortfolioState:
    """The state :func:`dump_portfolio_state` wrote (any version this job reads)."""
    return _portfolio_from_json(_load(data, "portfolio"))


def _pack_array(array: Any) -> dict[str, Any]:
    """Any numeric array as base64 of its little-endian bytes, with its dtype and shape. An n×n
    float matrix per row (the moments) keeps only its upper triangle: it is symmetric to the
    bit (:mod:`streamfolio.core.moments.estimators`), and it is most of a panel."""
    array = np.asarray(array)
    triangle = array.ndim == 3 and array.shape[1] == array.shape[2]
    if triangle:
        array = array[:, *np.triu_indices(array.shape[1])]
    kind = array.dtype.kind
    if kind == "f" and not np.isfinite(array).all():
        raise DataError(_NOT_FINITE)
    dtype = {"f": "<f8", "i": "<i8", "b": "|b1"}[kind]
    data = np.ascontiguousarray(array, dtype=dtype).tobytes()
    return {
        "dtype": dtype,
        "shape": list(array.shape),
        "triangle": triangle,
        "data": pybase64.b64encode(data).decode("ascii"),
    }


def _unpack_array(packed: dict[str, Any]) -> Any:
    array = np.frombuffer(pybase64.b64decode(packed["data"]), dtype=packed["dtype"])
    array = array.reshape(packed["shape"]).copy()
    if not packed["triangle"]:
        return array
    rows, size = array.shape
    n = round((math.sqrt(8 * size + 1) - 1) / 2)
    upper, lower = np.triu_indices(n), np.tril_indices(n)
    full = np.zeros((rows, n, n), dtype=array.dtype)
    full[:, *upper] = array
    full[:, *lower] = full.transpose(0, 2, 1)[:, *lower]
    return full


def dump_panels(panels: dict[tuple[int, str], PanelArrays]) -> str:
    """A shard's panels (by their key: tickers per portfolio, estimator) as versioned text."""
    # Every float is in a packed array, which refuses NaNs and infinities; the text itself is
    # not searched for the "null" of one (base64 holds that word in one shard save of four).
    return _dump(
        [
            [d, kind, ids, {name: _pack_array(array) for name, array in arrays.items()}]
            for (d, kind), (ids, arrays) in panels.items()
        ],
        finite=True,
    )


def load_panels(data: str | bytes) -> dict[tuple[int, str], PanelArrays]:
    """The panels :func:`dump_panels` wrote.

    >>> arrays = {"m": np.arange(8.0).reshape(2, 2, 2) + np.eye(2), "n": np.array([3, 4])}
    >>> arrays["m"] = (arrays["m"] + arrays["m"].transpose(0, 2, 1)) / 2
    >>> again = load_panels(dump_panels({(2, "welford"): (["a", "b"], arrays)}))
    >>> ids, back = again[(2, "welford")]
    >>> ids, bool((back["m"] == arrays["m"]).all()), back["n"].tolist()
    (['a', 'b'], True, [3, 4])
    """
    return {
        (int(d), str(kind)): (list(ids), {n: _unpack_array(p) for n, p in arrays.items()})
        for d, kind, ids, arrays in _load(data, "panels")
    }


def dump_open_bar(bar: OpenBar) -> str:
    """An open bar of a shard as versioned text."""
    return _dump([bar[0], bar[1]])


def load_open_bar(data: str | bytes) -> OpenBar:
    """The bar :func:`dump_open_bar` wrote."""
    closes, returns = _load(data, "open bar")
    return closes, returns


def dump_member_bars(
    closes: dict[str, float], returns: dict[str, float], members: dict[str, Any]
) -> str:
    """A bar waiting for its time in a portfolio shard, with its members, as versioned text."""
    return _dump([closes, returns, members])


def load_member_bars(
    data: str | bytes,
) -> tuple[dict[str, float], dict[str, float], dict[str, tuple[str, ...]]]:
    """The bar :func:`dump_member_bars` wrote."""
    closes, returns, members = _load(data, "member bars")
    return closes, returns, {pid: tuple(tickers) for pid, tickers in members.items()}
