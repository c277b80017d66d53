"""Build the bundled long-format price history from the per-ticker daily CSV files.

Reads ``src/streamfolio/data/cse/daily/<TICKER>.csv`` (``date,open,high,low,close,volume``) and
writes, next to that folder:

- ``history.csv``: ``time,ticker,price,volume``, one row per traded session and ticker, sorted by
  time then ticker. ``time`` is the session close, 15:30 in ``Africa/Casablanca``, written
  ISO-8601 with its offset (``+01:00``, ``+00:00`` during Ramadan). 15:30 is the nominal close;
  on Ramadan days the session actually closed at 13:30, which changes no daily bar.
  A row with volume 0 (the stock did not trade; the daily files repeat the previous close there)
  is left out: it is not a trade, and ``SEMANTICS.md`` §2 gives a bar without trades no close.
- ``masi.csv``: ``time,ticker,price`` with ticker ``MASI``, from ``MASI_*.csv`` (``date,close``).

Stdlib only. ``--check`` compares instead of writing and exits 1 on any difference, for tests/CI.

    python tools/build_history.py [--check]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "streamfolio" / "data" / "cse"
ZONE = ZoneInfo("Africa/Casablanca")
SESSION_CLOSE = dt.time(15, 30)
INDEX = "MASI"


def close_time(day: str) -> str:
    """The session close of local date ``day`` as ISO-8601 with offset.

    >>> close_time("2026-09-30"), close_time("2026-02-25")
    ('2026-09-30T15:30:00+01:00', '2026-02-25T15:30:00+00:00')
    """
    return dt.datetime.combine(dt.date.fromisoformat(day), SESSION_CLOSE, tzinfo=ZONE).isoformat()


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _to_csv(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def build_history(daily_dir: Path) -> str:
    """The text of ``history.csv`` for the stock files in ``daily_dir``."""
    rows: list[tuple[str, str, str, str]] = []
    for path in sorted(daily_dir.glob("*.csv")):
        if path.stem.startswith(INDEX):
            continue
        for record in _read(path):
            if float(record["volume"]) == 0:
                continue
            rows.append((record["date"], path.stem, record["close"], record["volume"]))
    rows.sort()
    return _to_csv(
        ["time", "ticker", "price", "volume"],
        [(close_time(day), ticker, close, volume) for day, ticker, close, volume in rows],
    )


def build_index(daily_dir: Path) -> str:
    """The text of ``masi.csv`` for the ``MASI_*.csv`` file(s) in ``daily_dir``."""
    rows = sorted(
        (record["date"], record["close"])
        for path in sorted(daily_dir.glob(f"{INDEX}_*.csv"))
        for record in _read(path)
    )
    return _to_csv(["time", "ticker", "price"], [(close_time(d), INDEX, c) for d, c in rows])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_DIR, help="folder holding daily/")
    parser.add_argument("--check", action="store_true", help="compare, don't write; 1 if stale")
    args = parser.parse_args(argv)
    outputs = {
        args.data / "history.csv": build_history(args.data / "daily"),
        args.data / "masi.csv": build_index(args.data / "daily"),
    }
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text("utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path} is out of date: run python tools/build_history.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(outputs[path], encoding="utf-8", newline="")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
