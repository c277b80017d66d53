"""Reading untrusted answers: JSON decoding within limits, numbers, texts, times, row checks.

The exchange's answers are not trusted. These helpers turn a JSON value into a finite number, a
positive price, a count or a text (French or English number styles, ``"-"`` for nothing), decode
JSON under :data:`~streamfolio.feeds.cse.endpoints.MAX_BODY_BYTES` and
:data:`~streamfolio.feeds.cse.endpoints.MAX_JSON_DEPTH`, and raise a ``payload`` or ``layout``
:class:`~streamfolio.feeds.cse.errors.CseSourceError` when an answer's shape is wrong. The board
and history parsers are built on them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final
from zoneinfo import ZoneInfo

from streamfolio.errors import DataError
from streamfolio.feeds.cse.endpoints import MAX_BODY_BYTES, MAX_JSON_DEPTH
from streamfolio.feeds.cse.errors import CseSourceError
from streamfolio.messages import parse_price

EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# 9999-12-30T23:59:59.999Z, as in streamfolio.messages: any zone's local date of it still exists.
_MAX_EPOCH_MS: Final = 253_402_214_399_999
ONE_MS: Final = dt.timedelta(milliseconds=1)
_NUMBER_RE: Final = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SPACES: Final = str.maketrans("", "", " \u00a0\u202f\t")
_NO_VALUE: Final = frozenset({"", "-", "--", "null", "none", "n/a", "na", "nan"})


def read_number(value: object) -> float | None:
    """A finite number from a JSON number or text (French or English style), else None.

    >>> [read_number(v) for v in ("1 234,5", 680, "-", None, "abc")]
    [1234.5, 680.0, None, None, None]
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer of 309 digits or more: JSON allows it
            return None
    elif isinstance(value, str):
        text = value.translate(_SPACES)
        if text.lower() in _NO_VALUE:
            return None
        if "," in text:
            if "." in text and text.rfind(".") > text.rfind(","):
                text = text.replace(",", "")
            else:
                text = text.replace(".", "").replace(",", ".")
        if not _NUMBER_RE.fullmatch(text):
            return None
        number = float(text)
    else:
        return None
    return number if math.isfinite(number) else None


def read_positive(value: object) -> float | None:
    """:func:`read_number` if it is > 0 (a price), else None."""
    number = read_number(value)
    return number if number is not None and number > 0 else None


def read_count(value: object) -> float | None:
    """A cumulative count (shares, MAD, trades): finite and >= 0, else None.

    A negative count is nonsense, and it would let a tick's volume (a difference of two counts)
    overflow to infinity.
    """
    number = read_number(value)
    return number if number is not None and number >= 0 else None


def read_price(value: object) -> float:
    """:func:`~streamfolio.messages.parse_price`, with an integer too large for a float (which
    JSON allows) a :class:`~streamfolio.errors.DataError` too, not an ``OverflowError``."""
    try:
        return parse_price(value)  # type: ignore[arg-type]  # parse_price checks the type
    except OverflowError:
        raise DataError("price is a number too large to be a price") from None


def read_text(value: object) -> str:
    """A stripped text, or the French (else English) one of a translated text; else ``""``."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):  # {"fr": ..., "en": ..., "ar": ...}
        return read_text(value.get("fr") or value.get("en") or "")
    return ""


def row_bytes(row: object) -> bytes:
    """A row as JSON bytes (its ``repr`` if it will not encode), for a reject's payload."""
    try:
        return json.dumps(row, ensure_ascii=False, sort_keys=True, default=str).encode()
    except (TypeError, ValueError):
        return repr(row).encode()


def local_date(epoch_ms: int, zone: ZoneInfo) -> dt.date:
    """The date in ``zone`` of an epoch time in ms."""
    return (EPOCH + epoch_ms * ONE_MS).astimezone(zone).date()


def read_epoch_ms(value: object) -> int | None:
    """Epoch milliseconds from a number of seconds or milliseconds (both are seen), or None.

    None also for a time outside 1970..9999, which no date can hold (``1e20`` would overflow).
    """
    number = read_number(value)
    if number is None or number < 0:
        return None
    millis = int(number if number > 1e11 else number * 1000)
    return millis if millis <= _MAX_EPOCH_MS else None


def shorten(value: object, limit: int = 80) -> str:
    """``value`` as JSON for a message, cut to ``limit`` characters (the answer is untrusted)."""
    return row_bytes(value)[:limit].decode("utf-8", "replace")


def require_fields(
    rows: Sequence[Mapping[str, Any]], names: Iterable[Sequence[str]], where: str, url: str
) -> None:
    """Raise a ``layout`` error if every row lacks a field: the API renamed or dropped it.

    Each entry of ``names`` lists acceptable spellings of one field.
    """
    objects = object_rows(rows, where, url)
    if not objects:
        return
    for spellings in names:
        if not any(any(name in row for name in spellings) for row in objects):
            shown = " or ".join(repr(n) for n in spellings)
            keys = ", ".join(sorted(str(key) for key in objects[0])[:40])
            raise CseSourceError(
                url,
                f"field {shown} is missing from all {len(rows)} rows of {where}: the API's "
                f"layout changed (the first row has: {keys})",
                kind="layout",
            )


def object_rows(rows: Sequence[object], where: str, url: str) -> list[Mapping[str, Any]]:
    """The rows that are JSON objects; a ``payload`` error if there are rows but none is one.

    One stray row is rejected on its own later; a list of nothing but numbers or strings is not
    the board (a garbled or hostile answer), so it fails as a whole, and can be retried.
    """
    objects = [row for row in rows if isinstance(row, Mapping)]
    if rows and not objects:
        raise CseSourceError(
            url,
            f"none of the {len(rows)} rows of {where} is an object (the first is "
            f"{shorten(rows[0])})",
            kind="payload",
        )
    return objects


def decode_json(body: str | bytes | Any, url: str) -> Any:
    """Decode a JSON answer; anything unreadable or nested too deep is a ``payload`` error."""
    if not isinstance(body, str | bytes):
        check_depth(body, url)
        return body
    check_size(body, url)
    try:
        data = json.loads(body)
    except RecursionError:
        raise CseSourceError(
            url, f"response is JSON nested too deep (over {MAX_JSON_DEPTH} levels)", kind="payload"
        ) from None
    except ValueError as exc:  # UnicodeDecodeError (not UTF-8) is a ValueError too
        start = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        raise CseSourceError(
            url, f"response is not JSON ({exc}); it starts with {start.strip()!r}", kind="payload"
        ) from None
    check_depth(data, url)
    return data


def check_size(body: str | bytes, url: str) -> None:
    """A body over :data:`MAX_BODY_BYTES` is a ``payload`` error, however it reached a parser."""
    if len(body) > MAX_BODY_BYTES:
        raise CseSourceError(url, f"answer larger than {MAX_BODY_BYTES} bytes", kind="payload")


def check_depth(data: object, url: str) -> None:
    """Raise a ``payload`` error if ``data`` nests deeper than :data:`MAX_JSON_DEPTH`.

    Iterative, so that the check itself cannot overflow the stack; what follows it (the row
    code, ``json.dumps`` of a rejected row) may then recurse safely.
    """
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, Mapping):
            children: Iterable[object] = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise CseSourceError(
                url,
                f"response is JSON nested too deep (over {MAX_JSON_DEPTH} levels)",
                kind="payload",
            )
        stack.extend((child, depth + 1) for child in children)


def expect_object(value: object, what: str, url: str) -> Mapping[str, Any]:
    """``value`` if it is a JSON object; another JSON type is a ``payload`` error (garbled)."""
    if not isinstance(value, Mapping):
        raise CseSourceError(
            url, f"expected a JSON object ({what}), got {type(value).__name__}", kind="payload"
        )
    return value


def expect_rows(value: object, where: str, url: str) -> list[Any]:
    """The list at ``where``; any other JSON type there is a ``payload`` error (the answer is
    garbled, not a renamed field: a retry may get a good one)."""
    if not isinstance(value, list):
        raise CseSourceError(
            url, f"expected a list at {where}, got {type(value).__name__}", kind="payload"
        )
    return value
