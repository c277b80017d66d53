"""`streamfolio job state`: decoding and printing a checkpoint's keyed state, from the JSON lines
the Java reader writes (faked here; the real reader on a real checkpoint:
tests/integration/test_job_state.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from streamfolio.cli import app
from streamfolio.errors import DataError
from streamfolio.flink import checkpoint_state
from streamfolio.flink.checkpoint_state import (
    CheckpointStateError,
    checkpoint_folder,
    portfolio_views,
    report_document,
    report_lines,
)
from streamfolio.flink.state import dump_member_bars, dump_panels, dump_portfolio_state

runner = CliRunner()


def _state(**more: Any) -> dict[str, Any]:
    return {"seeded": True, "seq": 2, "pending": [], "bars": {}, "monitor": None, **more}


def _monitor(n: int, mean: list[float]) -> dict[str, Any]:
    d = len(mean)
    return {
        "moments": {"kind": "welford", "n": n, "mean": mean, "m2": np.eye(d).tolist()},
        "waiting_for": [],
        "weights": [0.5] * d,
        "weights_timestamp_ms": 1_000,
        "stats_timestamp_ms": 9_000,
        "seed_timestamp_ms": 1_000,
        "last_metrics": None,
    }


def _panel_arrays(rows: list[tuple[int, list[float], list[float] | None, int]]) -> dict[str, Any]:
    d = len(rows[0][1])
    return {
        "n": np.array([n for n, _, _, _ in rows]),
        "mean": np.array([mean for _, mean, _, _ in rows]),
        "matrix": np.array([np.eye(d) for _ in rows]),
        "weights": np.array([w or [0.0] * d for _, _, w, _ in rows]),
        "has_weights": np.array([w is not None for _, _, w, _ in rows]),
        "stats_ts": np.array([ts for _, _, _, ts in rows]),
    }


def _entry(shard: str, state: str, key: str | None, value: str) -> dict[str, Any]:
    return {"shard": shard, "state": state, "key": key, "value": value}


def _entries() -> list[dict[str, Any]]:
    """Shard 3: ``kept`` in a panel, ``gone`` removed; shard 5: ``fresh`` defined by a message,
    waiting for its statistics (a bar and weights held), ``warming`` with its own monitor, and
    a bar of the shard not processed yet naming ``warming`` and ``later`` (no roster entry)."""
    spec = {"portfolio_id": "fresh", "tickers": ["AAA", "CCC"], "bar_ms": 1_000}
    weights = [7_000, 1, 1, "weights", {"timestamp": 7_000}, [None, 0, 4, None]]
    panel = _panel_arrays([(60, [0.001, -0.002], [0.25, 0.75], 9_000)])
    return [
        _entry("3", "roster", "kept", dump_portfolio_state(_state(in_panel=True))),
        _entry("3", "roster", "gone", dump_portfolio_state(_state(spec=False, in_panel=False))),
        _entry("3", "panels", None, dump_panels({(2, "welford"): (["kept"], panel)})),
        _entry("3", "epoch", None, "abc:7"),
        _entry(
            "5",
            "roster",
            "fresh",
            dump_portfolio_state(
                _state(
                    seeded=False,
                    spec=spec,
                    pending=[weights],
                    bars={8: ({"AAA": 1.0}, {"AAA": 0.01})},
                )
            ),
        ),
        _entry(
            "5",
            "roster",
            "warming",
            dump_portfolio_state(_state(monitor=_monitor(51, [0.1, 0.2]), in_panel=False)),
        ),
        _entry(
            "5",
            "bars",
            "1000|9",
            dump_member_bars({"AAA": 1.0}, {}, {"warming": ("AAA", "BBB"), "later": ("AAA",)}),
        ),
        _entry("5", "panels", None, dump_panels({})),
    ]


CONFIGURED = {"kept": ["AAA", "BBB"], "gone": ["BBB", "CCC"], "warming": ["AAA", "BBB"]}


def test_each_portfolio_is_told_from_its_shard_s_states() -> None:
    views = {v.portfolio_id: v for v in portfolio_views(_entries(), CONFIGURED)}
    assert sorted(views) == ["fresh", "gone", "kept", "later", "warming"]

    kept = views["kept"]
    assert (kept.shard, kept.definition, kept.seeded) == ("3", "configured", True)
    assert (kept.monitor, kept.panel) == ("panel", [2, "welford"])
    assert kept.statistics == {
        "n": 60,
        "estimator": "welford",
        "mean": {"AAA": 0.001, "BBB": -0.002},
        "stats_timestamp_ms": 9_000,
        "weights": {"AAA": 0.25, "BBB": 0.75},
    }
    assert not kept.problems

    gone = views["gone"]
    assert (gone.definition, gone.monitor, gone.panel, gone.statistics) == (
        "removed",
        "none",
        None,
        None,
    )
    assert (gone.pending, gone.bars_waiting, gone.shard_bars, gone.problems) == ([], [], [], [])
    assert gone.tickers is None

    fresh = views["fresh"]
    assert (fresh.definition, fresh.seeded, fresh.tickers) == ("defined", False, ["AAA", "CCC"])
    assert fresh.pending == [{"timestamp": 7_000, "kind": "weights"}]
    assert fresh.bars_waiting == [8]
    assert fresh.monitor == "none"

    warming = views["warming"]
    assert warming.monitor == "own state"
    assert warming.statistics is not None
    assert warming.statistics["n"] == 51
    assert warming.statistics["mean"] == {"AAA": 0.1, "BBB": 0.2}
    assert warming.shard_bars == ["1000|9"]

    later = views["later"]
    assert (later.definition, later.shard, later.shard_bars) == ("unknown", "5", ["1000|9"])
    assert not later.problems


def test_state_a_removed_portfolio_should_not_have_left_is_a_problem() -> None:
    stale = _state(spec=False, monitor=_monitor(3, [0.0]), bars={4: ({}, {})})
    views = portfolio_views([_entry("1", "roster", "gone", dump_portfolio_state(stale))])
    assert views[0].problems == ["removed, but state is left"]
    orphan = dump_panels({(1, "ewm"): (["ghost"], _panel_arrays([(5, [0.1], None, 1)]))})
    marked = dump_portfolio_state(_state(in_panel=True))
    views = portfolio_views(
        [_entry("1", "panels", None, orphan), _entry("1", "roster", "lost", marked)]
    )
    problems = {v.portfolio_id: v.problems for v in views}
    assert problems == {
        "ghost": ["in a panel but not in the roster"],
        "lost": ["marked in a panel, but no panel of its shard holds it"],
    }


def test_a_value_in_an_unknown_format_is_refused() -> None:
    with pytest.raises(DataError, match="version"):
        portfolio_views([_entry("1", "roster", "p", "sf-state/9\n{}")])
    with pytest.raises(DataError, match="unknown state 'timers'"):
        portfolio_views([_entry("1", "timers", None, "")])


def test_the_table_and_the_document() -> None:
    views = portfolio_views(_entries(), CONFIGURED)
    lines = report_lines(views, Path("/cp/chk-3"))
    assert lines[0] == "/cp/chk-3: 5 portfolio(s) in 2 shard(s)"
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["portfolio"] == [
        "portfolio",
        "shard",
        "definition",
        "seeded",
        "pending",
        "bars",
        "monitor",
        "stats",
    ]
    assert rows["kept"][:7] == ["kept", "3", "configured", "yes", "0", "0", "panel"]
    assert rows["kept"][7:] == ["2/welford", "n=60", "stats@9000", "weights"]
    assert rows["gone"] == ["gone", "3", "removed", "yes", "0", "0", "none", "-"]
    assert rows["fresh"][:7] == ["fresh", "5", "defined", "no", "1", "1", "none"]
    assert rows["warming"][5:7] == ["1", "own"]
    document = report_document(views, Path("/cp/chk-3"))
    assert json.loads(json.dumps(document)) == document
    assert document["shards"] == ["3", "5"]
    ids = [p["portfolio_id"] for p in document["portfolios"]]
    assert ids == ["fresh", "gone", "kept", "later", "warming"]
    assert {p["portfolio_id"]: p["definition"] for p in document["portfolios"]}["gone"] == (
        "removed"
    )


def test_report_lines_of_an_empty_checkpoint() -> None:
    assert report_lines([], Path("/cp")) == ["/cp: 0 portfolio(s) in 0 shard(s)"]


# ------------------------------------------------------------------------------- the folder


def _checkpoint(root: Path, job: str, n: int, *, complete: bool = True, age_s: int = 0) -> Path:
    folder = root / job / f"chk-{n}"
    folder.mkdir(parents=True)
    if complete:
        metadata = folder / "_metadata"
        metadata.write_bytes(b"x")
        stamp = metadata.stat().st_mtime - age_s
        os.utime(metadata, (stamp, stamp))
    return folder


def test_the_checkpoint_folder_named_or_latest(tmp_path: Path) -> None:
    old = _checkpoint(tmp_path, "job1", 4, age_s=60)
    new = _checkpoint(tmp_path, "job2", 2)
    _checkpoint(tmp_path, "job2", 3, complete=False)
    assert checkpoint_folder("latest", tmp_path) == new
    assert checkpoint_folder(str(old), tmp_path) == old.resolve()
    assert checkpoint_folder(str(old / "_metadata"), tmp_path) == old.resolve()
    assert checkpoint_folder(old.as_uri(), tmp_path) == old.resolve()
    with pytest.raises(CheckpointStateError, match=r"no _metadata.*newest checkpoint is .*chk-2"):
        checkpoint_folder(str(tmp_path / "job2"), tmp_path)
    with pytest.raises(CheckpointStateError, match="chk-3 holds no checkpoint"):
        checkpoint_folder(str(tmp_path / "job2" / "chk-3"), tmp_path)
    with pytest.raises(CheckpointStateError, match="does not exist"):
        checkpoint_folder(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(CheckpointStateError, match=r"no complete checkpoint .* under"):
        checkpoint_folder("latest", tmp_path / "empty")
    with pytest.raises(CheckpointStateError, match="local file system"):
        checkpoint_folder("s3://bucket/chk-1", tmp_path)


def test_reader_failures_say_what_they_mean() -> None:
    wrong_job = checkpoint_state._reader_failure(
        Path("/c"),
        "portfolio-shards",
        "IOException: Savepoint does not contain state with operator uid portfolio-shards",
    )
    assert "no state of the portfolio step" in wrong_job
    process = checkpoint_state._reader_failure(
        Path("/c"),
        "portfolio-shards",
        "ClassNotFoundException: org.apache.flink.streaming.api.utils.ByteArrayWrapperSerializer",
    )
    assert "process mode" in process and "thread mode" in process
    other = checkpoint_state._reader_failure(Path("/c"), "u", "boom\n")
    assert other.startswith("the state reader failed on /c") and "boom" in other


# ---------------------------------------------------------------------------------- the CLI


@pytest.fixture
def fake_reader(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    read: list[Path] = []

    def read_entries(checkpoint: Path, **_: Any) -> list[dict[str, Any]]:
        read.append(checkpoint)
        return _entries()

    monkeypatch.setattr(checkpoint_state, "read_entries", read_entries)
    return read


def test_job_state_prints_the_table_or_json(tmp_path: Path, fake_reader: list[Path]) -> None:
    chk = _checkpoint(tmp_path, "job", 7)
    result = runner.invoke(app, ["job", "state", str(chk)])
    assert result.exit_code == 0, result.output
    assert fake_reader == [chk.resolve()]
    assert "gone" in result.stdout and "removed" in result.stdout
    result = runner.invoke(app, ["job", "state", str(chk), "--json", "--portfolio", "kept"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [p["portfolio_id"] for p in document["portfolios"]] == ["kept"]
    assert document["portfolios"][0]["monitor"] == "panel"


def test_job_state_errors(tmp_path: Path, fake_reader: list[Path]) -> None:
    chk = _checkpoint(tmp_path, "job", 7)
    result = runner.invoke(app, ["job", "state", str(chk), "-p", "nobody"])
    assert result.exit_code == 2
    assert "no portfolio 'nobody'" in result.output and "kept" in result.output
    result = runner.invoke(app, ["job", "state", str(tmp_path / "job")])
    assert result.exit_code == 1
    assert "holds no checkpoint" in result.output and "chk-7" in result.output
    assert fake_reader == [chk.resolve()]


def test_no_java_is_an_error_naming_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    chk = _checkpoint(tmp_path, "job", 1)
    with pytest.raises(CheckpointStateError, match=r"Java 17\+ is needed to read a Flink"):
        checkpoint_state.read_entries(chk, root=tmp_path)
