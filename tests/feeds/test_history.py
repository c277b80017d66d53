"""Reading price histories: the layout, every rejected row, time zones, the bundled data."""

from __future__ import annotations

import datetime as dt
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamfolio.errors import DataError
from streamfolio.feeds.history import (
    PriceHistory,
    Tick,
    bundled_history_path,
    bundled_index_path,
    read_history,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "history"
REPO = Path(__file__).parents[2]


def utc_ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC).timestamp() * 1000)


def test_good_file() -> None:
    history = read_history(FIXTURES / "good.csv")
    assert len(history) == 5
    assert history.times_ms.dtype == np.int64
    assert history.times_ms.tolist() == [
        utc_ms(2026, 9, 29, 14, 30),
        utc_ms(2026, 9, 29, 14, 30),
        utc_ms(2026, 9, 30, 14, 30),
        utc_ms(2026, 9, 30, 14, 30),  # naive 15:30 is Casablanca time, UTC+1
        utc_ms(2026, 10, 1, 8, 31) + 250,
    ]
    assert history.tickers.tolist() == ["ATW", "IAM", "ATW", "IAM", "ATW"]
    assert history.prices.tolist() == [680.0, 113.55, 680.0, 114.1, 681.5]
    assert math.isnan(history.volumes[1])
    assert history.volumes[[0, 2, 3, 4]].tolist() == [30695, 22072, 1200, 10]
    assert history.symbols == ("ATW", "IAM")
    assert history.source == str(FIXTURES / "good.csv")


def test_arrays_are_read_only() -> None:
    history = read_history(FIXTURES / "good.csv")
    with pytest.raises(ValueError, match="read-only"):
        history.prices[0] = 1.0


def test_columns_in_any_order_and_volume_optional() -> None:
    history = read_history(FIXTURES / "no_volume.csv")
    assert history.tickers.tolist() == ["ATW", "IAM"]
    assert np.isnan(history.volumes).all()


def test_naive_times_follow_casablanca_including_ramadan() -> None:
    history = read_history(FIXTURES / "ramadan_naive.csv")
    # 2026-02-25 falls in Ramadan: Morocco is on UTC+0, so naive 15:30 is 15:30 UTC, the same
    # instant as the explicit +00:00 row. A month later the clock is back on UTC+1.
    assert history.times_ms.tolist() == [
        utc_ms(2026, 2, 25, 15, 30),
        utc_ms(2026, 2, 25, 15, 30),
        utc_ms(2026, 3, 25, 14, 30),
    ]


def test_naive_times_in_another_zone() -> None:
    history = read_history(FIXTURES / "ramadan_naive.csv", timezone="UTC")
    assert history.times_ms[2] == utc_ms(2026, 3, 25, 15, 30)


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("missing_column.csv", 1, "missing column(s) price"),
        ("unknown_column.csv", 1, "unknown column(s) 'venue'"),
        ("unparsable_price.csv", 3, "unparsable price '680,5'"),
        ("zero_price.csv", 3, "zero price 0.0"),
        ("negative_price.csv", 2, "negative price -680.0"),
        ("nan_price.csv", 3, "non-finite price nan"),
        ("bad_time.csv", 3, "bad time '30/09/2026 15:30'"),
        ("date_only.csv", 2, "a date without a time of day"),
        ("unsorted.csv", 4, "earlier than the previous row's 2026-09-30T15:30:00+01:00"),
        ("duplicate.csv", 4, "duplicate row for ticker 'ATW' at time 2026-09-29T14:30:00Z"),
        ("field_count.csv", 3, "expected 4 fields, got 3"),
        ("bad_volume.csv", 2, "negative volume -3.0"),
        ("empty.csv", 1, "empty file"),
    ],
)
def test_bad_rows_are_located(name: str, line: int, reason: str) -> None:
    path = FIXTURES / name
    with pytest.raises(DataError) as caught:
        read_history(path)
    assert caught.value.where == f"{path}:{line}"
    assert reason in caught.value.reason


def test_unknown_ticker() -> None:
    path = FIXTURES / "unknown_ticker.csv"
    assert len(read_history(path)) == 2
    with pytest.raises(DataError) as caught:
        read_history(path, known_tickers=["ATW", "IAM"])
    assert caught.value.where == f"{path}:3"
    assert caught.value.reason == "unknown ticker 'XYZ' (known: ATW, IAM)"


def test_byte_order_mark_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_text("\ufefftime,ticker,price\r\n2026-09-29T15:30:00,ATW,680\r\n\r\n", "utf-8")
    assert read_history(path).prices.tolist() == [680.0]


def test_closes_wide() -> None:
    times, names, closes = read_history(FIXTURES / "good.csv").closes_wide()
    assert names == ("ATW", "IAM")
    assert times.tolist() == [
        utc_ms(2026, 9, 29, 14, 30),
        utc_ms(2026, 9, 30, 14, 30),
        utc_ms(2026, 10, 1, 8, 31) + 250,
    ]
    np.testing.assert_array_equal(closes, [[680.0, 113.55], [680.0, 114.1], [681.5, np.nan]])


def test_closes_wide_selects_and_orders_columns() -> None:
    history = read_history(FIXTURES / "good.csv")
    times, names, closes = history.closes_wide(["IAM"])
    assert names == ("IAM",)
    assert closes[:, 0].tolist() == [113.55, 114.1]
    assert len(times) == 2
    with pytest.raises(DataError, match=r"no prices for \['BCP'\]"):
        history.closes_wide(["IAM", "BCP"])


def test_iter_ticks() -> None:
    ticks = list(read_history(FIXTURES / "no_volume.csv").iter_ticks())
    assert ticks[0] == Tick(utc_ms(2026, 9, 29, 14, 30), "ATW", 680.0, ticks[0].volume)
    assert [type(t.time_ms) for t in ticks] == [int, int]


def test_empty_history_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "header_only.csv"
    path.write_text("time,ticker,price\n", "utf-8")
    history = read_history(path)
    assert len(history) == 0
    assert history.symbols == ()
    assert list(history.iter_ticks()) == []


def test_mismatched_arrays_are_rejected() -> None:
    with pytest.raises(ValueError, match="same length"):
        PriceHistory(
            times_ms=np.array([1], dtype=np.int64),
            tickers=np.array(["ATW", "IAM"]),
            prices=np.array([1.0]),
            volumes=np.array([1.0]),
        )


# ---------------------------------------------------------------------------- bundled data


def test_bundled_history() -> None:
    history = read_history(bundled_history_path())
    assert history.symbols == tuple(
        sorted(["AKT", "ATW", "BOA", "BCP", "MDP", "MUT", "IAM", "RIS", "TGC", "ADI", "IMO"])
    )
    # Every daily row except the 14 sessions without a trade (volume 0).
    assert len(history) == 8184 - 14
    assert (history.volumes > 0).all()
    times, _, closes = history.closes_wide()
    last = dict(zip(history.symbols, closes[-1].tolist(), strict=True))
    assert times[-1] == utc_ms(2026, 9, 30, 14, 30)
    assert last["ATW"] == 680.0
    assert math.isnan(last["MUT"])  # MUT's last row is 2026-09-29


def test_bundled_index() -> None:
    index = read_history(bundled_index_path())
    assert index.symbols == ("MASI",)
    assert len(index) == 195
    assert index.prices[-1] == 17733.0593


def test_bundled_daily_files_are_the_shared_copies() -> None:
    shared = REPO.parent / "shared" / "market-data" / "daily"
    if not shared.is_dir():
        pytest.skip("shared/ is not next to the checkout")
    bundled = bundled_history_path().parent / "daily"
    names = sorted(p.name for p in shared.glob("*.csv"))
    assert sorted(p.name for p in bundled.glob("*.csv")) == names
    for name in names:
        assert (bundled / name).read_bytes() == (shared / name).read_bytes(), name


def test_generated_files_match_the_tool() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "build_history.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_tool_detects_stale_output(tmp_path: Path) -> None:
    daily = tmp_path / "daily"
    daily.mkdir()
    source = bundled_history_path().parent / "daily"
    for name in ("ATW.csv", "MASI_2025-12-01_2026-09-30.csv"):
        (daily / name).write_bytes((source / name).read_bytes())
    tool = [sys.executable, str(REPO / "tools" / "build_history.py"), "--data", str(tmp_path)]
    assert subprocess.run([*tool, "--check"], capture_output=True, check=False).returncode == 1
    assert subprocess.run(tool, capture_output=True, check=False).returncode == 0
    assert subprocess.run([*tool, "--check"], capture_output=True, check=False).returncode == 0
    history = read_history(tmp_path / "history.csv")
    assert history.symbols == ("ATW",)
    assert len(history) == 857
