"""A removed portfolio leaves no state, checked in a real checkpoint with `streamfolio job state`.

The job runs unbounded (thread mode, parallelism 1: the mode whose keyed state the reader
reads) on two configured portfolios, seeded with initial statistics and weights; ticks flow,
then a tombstone on the portfolios topic removes ``gone`` and heartbeats move every partition's
watermark past the removal. Once the job has written the statistics of the last bar, a
checkpoint triggered after that is waited for, the job is stopped, and `job state latest`
reads the newest checkpoint: ``gone`` is there only as the fact of its removal (no monitor, no
control message or bar waiting, in no panel), ``kept`` is a row of a panel holding the
statistics the job last wrote for it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jobkit
import numpy as np
import pytest
from jobkit import JobProcess, Message, Outputs, heartbeats, initial_stats, produce, run_settings

from streamfolio.flink.checkpoint_state import reader_jars
from streamfolio.serde import codec_for

if TYPE_CHECKING:
    from conftest import KafkaBroker

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.usefixtures("flink_jars")]

START = 1_750_000_000_000
N_BARS = 30
REMOVED = START + 12_000
CLOSED = START + (N_BARS + 5) * 1_000
"""The heartbeats' time: every bar of the ticks has ended, and the removal's time is past."""
PARTITION_OF = {"AAA": 0, "BBB": 1, "CCC": 2}
PORTFOLIOS: list[dict[str, Any]] = [
    {
        "id": "kept",
        "tickers": ["AAA", "BBB"],
        "weights": {"AAA": 0.6, "BBB": 0.4},
        "bar_seconds": 1,
        "periods_per_year": 1000,
    },
    {
        "id": "gone",
        "tickers": ["BBB", "CCC"],
        "weights": {"BBB": 0.5, "CCC": 0.5},
        "bar_seconds": 1,
        "periods_per_year": 1000,
    },
]


def _messages() -> list[Message]:
    """Seeds and weights at START, ticks of N_BARS bars, the removal of ``gone``, heartbeats."""
    messages = []
    for portfolio in PORTFOLIOS:
        key = portfolio["id"].encode()
        seed = codec_for("PortfolioStats").encode(initial_stats(portfolio, START, 1.0))
        weights = {
            "timestamp": START,
            "portfolio_id": portfolio["id"],
            "weights": portfolio["weights"],
        }
        messages += [
            Message("initial_stats", seed, key, START),
            Message("weights", codec_for("Weights").encode(weights), key, START),
        ]
    rng = np.random.default_rng(5)
    price = dict.fromkeys(PARTITION_OF, 100.0)
    ticks = []
    for k in range(N_BARS):
        for ticker, partition in PARTITION_OF.items():
            price[ticker] *= math.exp(rng.normal(0, 0.01))
            at = START + k * 1_000 + int(rng.integers(0, 1_000))
            value = codec_for("PriceTick").encode(
                {"ticker": ticker, "price": price[ticker], "event_time": at}
            )
            ticks.append(Message("prices", value, ticker.encode(), at, partition))
    messages += sorted(ticks, key=lambda m: m.timestamp_ms)
    messages.append(Message("portfolios", None, b"gone", REMOVED))  # type: ignore[arg-type]
    return messages


def _checkpoint_numbers(folder: Path) -> list[int]:
    """Every checkpoint started under ``folder`` (complete or not)."""
    return [int(p.name.removeprefix("chk-")) for p in folder.glob("*/chk-*")]


def _complete(folder: Path) -> list[int]:
    return [int(m.parent.name.removeprefix("chk-")) for m in folder.glob("*/chk-*/_metadata")]


def _job_state(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamfolio.cli", "job", "state", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_removed_portfolio_leaves_no_state_in_a_checkpoint(
    kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader_jars(jobkit.ROOT)  # built before any clock starts (Maven, first use only)
    settings, config = run_settings(
        kafka_broker,
        tmp_path,
        f"state{time.monotonic_ns() % 10**6}",
        PORTFOLIOS,
        max_out_of_orderness_ms=500,
        idleness_ms=0,
        parallelism=1,
        checkpoint_interval_ms=500,
    )
    checkpoints = Path(settings.flink.checkpoint_dir)
    # The reader reads thread mode's state (jobkit's jobs run in process mode).
    monkeypatch.setitem(jobkit.FLINK_TEST_ENV, "STREAMFOLIO_FLINK_PYTHON_MODE", "thread")
    produce(settings, [*_messages(), *heartbeats(settings, CLOSED)])
    last_bar_end = START + N_BARS * 1_000
    outputs = Outputs(settings)
    job = JobProcess(config, tmp_path / "job.log")
    try:
        outputs.wait_for(
            lambda: outputs.last_stats_time("kept") >= last_bar_end, job, "kept's last bar"
        )
        started = max(_checkpoint_numbers(checkpoints), default=0)
        outputs.wait_for(
            lambda: any(n > started for n in _complete(checkpoints)),
            job,
            f"a checkpoint after chk-{started}",
        )
    finally:
        job.kill()
        outputs.close()
    assert outputs.dead == []
    assert max(m["timestamp"] for m in outputs.metrics["gone"]) <= REMOVED

    run = _job_state("latest", "--json", "--config", str(config))
    assert run.returncode == 0, run.stderr
    document = json.loads(run.stdout)
    chk = Path(document["checkpoint"])
    assert chk.parent.parent == checkpoints.resolve()
    assert int(chk.name.removeprefix("chk-")) > started
    views = {v["portfolio_id"]: v for v in document["portfolios"]}
    assert sorted(views) == ["gone", "kept"], views
    assert not [v["problems"] for v in views.values() if v["problems"]]

    gone = views["gone"]
    assert gone["definition"] == "removed"
    assert (gone["monitor"], gone["panel"], gone["statistics"]) == ("none", None, None)
    assert (gone["pending"], gone["bars_waiting"], gone["shard_bars"]) == ([], [], [])

    kept = views["kept"]
    assert (kept["definition"], kept["seeded"], kept["monitor"]) == ("configured", True, "panel")
    assert kept["panel"] == [2, "welford"]
    assert (kept["pending"], kept["bars_waiting"], kept["shard_bars"]) == ([], [], [])
    last = outputs.stats["kept"][-1]
    statistics = kept["statistics"]
    assert statistics["stats_timestamp_ms"] == last["timestamp"]
    assert statistics["n"] == last["count"]
    assert statistics["mean"] == last["meanReturns"]
    assert statistics["weights"] == {"AAA": 0.6, "BBB": 0.4}

    one = _job_state(str(chk), "-p", "gone")
    assert one.returncode == 0, one.stderr
    rows = [line.split() for line in one.stdout.splitlines()[1:]]
    assert rows[0][:3] == ["portfolio", "shard", "definition"]
    assert rows[1][0] == "gone" and rows[1][2] == "removed", one.stdout
