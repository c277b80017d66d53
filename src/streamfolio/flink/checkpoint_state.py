"""``streamfolio job state``: the job's keyed state read out of a checkpoint, per portfolio.

The portfolio step (:class:`~streamfolio.flink.operators.PortfolioShards`, operator uid
``portfolio-shards``) keeps per shard: ``roster`` (map: portfolio id → its state), ``panels``
(the warmed-up monitors as arrays), ``bars`` (map: bars received, not processed yet) and
``epoch``, all Flink ``STRING`` values in streamfolio's versioned format
(:mod:`streamfolio.flink.state`).

Reading: a small Java program over Flink's State Processor API
(``tools/flink/state-reader``, class ``io.streamfolio.flink.StateReader``) lists every entry of
those states as a JSON line ``{"shard", "state", "key", "value"}`` (:func:`read_entries`), with
RocksDB's state backend for an incremental RocksDB checkpoint, else the heap's. It
is built with Maven on first use into ``.cache/flink/state-reader`` (:func:`reader_jars`), a
folder of its own: the job puts every jar of ``.cache/flink/lib`` on its class path, and the
State Processor API has no business there. It runs in its own JVM beside the apache-flink
wheel's ``lib`` jars. Decoding (:func:`portfolio_views`) and printing (:func:`report_lines`,
:func:`report_document`) are plain Python.

Thread mode only: the job's Python functions keep Flink's own typed state (``STRING`` values,
keyed by PyFlink's one-field row of the shard) when they run in thread mode (the default of
``job run`` at parallelism 1). In process mode the Java side keeps the bytes the Python
workers coded (map keys in flink-python's ``ByteArrayWrapperSerializer``, values as byte
arrays): the reader fails on them and :func:`read_entries` says so. See docs/flink.md,
"Looking inside a checkpoint".
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from streamfolio.devtools import reraise_as
from streamfolio.devtools.files import tail_lines
from streamfolio.devtools.java import find_java
from streamfolio.devtools.maven import cached_folder, find_mvn, is_complete, run_maven
from streamfolio.errors import DataError, StreamfolioError
from streamfolio.flink.state import (
    load_member_bars,
    load_panels,
    load_portfolio_state,
)

__all__ = [
    "READER_DIR",
    "READER_POM",
    "UID",
    "CheckpointStateError",
    "PortfolioView",
    "checkpoint_folder",
    "portfolio_views",
    "read_entries",
    "reader_jars",
    "report_document",
    "report_lines",
]

UID: Final = "portfolio-shards"
"""The uid of the portfolio step in :func:`streamfolio.flink.job.build_pipeline`."""
READER_POM: Final = Path("tools/flink/state-reader/pom.xml")
"""The Maven project of the state reader, relative to the checkout."""
READER_JAR: Final = "streamfolio-state-reader.jar"
READER_CLASS: Final = "io.streamfolio.flink.StateReader"
READER_DIR: Final = Path(".cache/flink/state-reader")
"""Where the reader and the State Processor API jar are cached (git-ignored); never
``.cache/flink/lib``, whose every jar goes on the job's class path."""
READER_TIMEOUT_S: Final = 600.0
JAVA_MIN: Final = 17
_STATES: Final = ("roster", "bars", "panels", "epoch")


class CheckpointStateError(StreamfolioError):
    """A checkpoint's state cannot be read (no checkpoint there, no Java, a reader failure).
    Says what to do."""


# --------------------------------------------------------------------------- the checkpoint


def checkpoint_folder(path: str, checkpoint_dir: Path) -> Path:
    """The checkpoint (or savepoint) folder that ``path`` names: a folder holding
    ``_metadata``, that file itself, or ``latest``, the newest complete checkpoint retained
    under ``checkpoint_dir`` (``flink.checkpoint_dir``), as ``job run --from-checkpoint latest``
    finds it (:func:`~streamfolio.flink.runtime.latest_checkpoint`)."""
    from streamfolio.flink.runtime import latest_checkpoint

    if path == "latest":
        found = latest_checkpoint(checkpoint_dir)
        if found is None:
            raise CheckpointStateError(
                f"no complete checkpoint (a chk-N folder with _metadata) under {checkpoint_dir} "
                "(flink.checkpoint_dir of the configuration); give the checkpoint's path, or "
                "the --config of the job that wrote it"
            )
        return found
    if "://" in path and not path.startswith("file://"):
        raise CheckpointStateError(
            f"{path}: only checkpoints on a local file system are read here; copy it to a "
            "local folder first"
        )
    folder = Path(path.removeprefix("file://")).expanduser()
    if folder.name == "_metadata" and folder.is_file():
        folder = folder.parent
    if not folder.exists():
        raise CheckpointStateError(f"{folder} does not exist; give a checkpoint's folder (chk-N)")
    if not (folder / "_metadata").is_file():
        newest = sorted(
            (m.parent for m in folder.glob("chk-*/_metadata")),
            key=lambda p: ((p / "_metadata").stat().st_mtime, p.name),
        )
        hint = f"; its newest checkpoint is {newest[-1]}" if newest else ""
        raise CheckpointStateError(
            f"{folder} holds no checkpoint (no _metadata file: Flink writes it last, so a "
            f"checkpoint cut off midway has none){hint}; give a chk-N folder, a savepoint "
            "folder, or 'latest'"
        )
    return folder.resolve()


# ------------------------------------------------------------------------------ the reader


def reader_jars(
    root: Path, *, quiet: bool = True, progress: Callable[[str], None] | None = None
) -> Path:
    """The folder of the state reader's jars (its own and ``flink-state-processor-api``),
    built and fetched with Maven into ``.cache/flink/state-reader`` on first use (again only
    when ``tools/flink/state-reader`` changes); ``progress`` is told when Maven runs."""
    folder = (root / READER_DIR).resolve()
    stamp = _stamp(root)
    if progress is not None and not is_complete(folder, stamp):
        progress(f"building the state reader with Maven into {folder} (first use only)")
    with reraise_as(CheckpointStateError):
        return cached_folder(folder, stamp, lambda into: _build(root, into, quiet=quiet))


def _stamp(root: Path) -> str:
    digest = hashlib.sha256()
    project = root / READER_POM.parent
    for path in [root / READER_POM, *sorted((project / "src" / "main").rglob("*.*"))]:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _build(root: Path, into: Path, *, quiet: bool) -> None:
    mvn = find_mvn(
        f"build the checkpoint state reader into {(root / READER_DIR).resolve()}",
        "put mvn on PATH",
    )
    pom = root / READER_POM
    run_maven(
        mvn,
        pom,
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={into}",
        what="fetching flink-state-processor-api",
        quiet=quiet,
    )
    built = pom.parent / "target" / READER_JAR
    run_maven(mvn, pom, "package", what=f"building {READER_JAR}", quiet=quiet, produces=built)
    shutil.copy2(built, into)


def flink_lib() -> Path:
    """The apache-flink wheel's ``lib`` folder (Flink itself: the reader's runtime)."""
    found = importlib.util.find_spec("pyflink")
    if found is None or not found.submodule_search_locations:
        raise CheckpointStateError(
            "reading a checkpoint needs Flink's jars, from the apache-flink package: install "
            "streamfolio with its flink extra (pip install -e '.[flink]')"
        )
    return Path(next(iter(found.submodule_search_locations))) / "lib"


def read_entries(
    checkpoint: Path,
    *,
    root: Path | None = None,
    uid: str = UID,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every entry of the portfolio step's keyed state in ``checkpoint``: dicts with ``shard``,
    ``state`` (roster, bars, panels, epoch), ``key`` (a map state's key, else None), ``value``
    (the versioned text). ``progress``: told when the reader is built (first use)."""
    from streamfolio.flink.connectors import find_root

    with reraise_as(CheckpointStateError):
        java = find_java(JAVA_MIN, purpose="read a Flink checkpoint")
    jars = reader_jars(root or find_root(), progress=progress)
    classpath = [*sorted(jars.glob("*.jar")), *sorted(flink_lib().glob("*.jar"))]
    with tempfile.TemporaryDirectory(prefix="streamfolio-state-") as scratch:
        out = Path(scratch) / "entries.jsonl"
        command = [
            java,
            "-cp",
            os.pathsep.join(map(str, classpath)),
            READER_CLASS,
            str(checkpoint),
            str(out),
            uid,
        ]
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, timeout=READER_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            raise CheckpointStateError(
                f"the state reader did not finish in {READER_TIMEOUT_S:g} s"
            ) from None
        if run.returncode != 0:
            raise CheckpointStateError(_reader_failure(checkpoint, uid, run.stderr))
        text = out.read_text(encoding="utf-8") if out.is_file() else ""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _reader_failure(checkpoint: Path, uid: str, stderr: str) -> str:
    """What a failed read means, and what to do."""
    if f"does not contain state with operator uid {uid}" in stderr:
        return (
            f"{checkpoint} holds no state of the portfolio step (operator uid {uid!r}): it was "
            "written by another job, or by a streamfolio job before that uid"
        )
    if "ByteArrayWrapperSerializer" in stderr or "BytePrimitiveArraySerializer" in stderr:
        return (
            f"{checkpoint} was written by a job whose Python functions ran in process mode "
            "(parallelism above 1, or STREAMFOLIO_FLINK_PYTHON_MODE=process): its keyed state "
            "is bytes coded by the Python workers, not Flink STRING state, and only thread "
            "mode's state is read here (run the job at parallelism 1 in thread mode, the "
            "default of `job run`)"
        )
    return f"the state reader failed on {checkpoint}:\n{tail_lines(stderr)}"


# ---------------------------------------------------------------------------- the decoding


@dataclass
class PortfolioView:
    """One portfolio as the checkpoint holds it."""

    portfolio_id: str
    shard: str
    definition: str
    """``configured`` (the configuration's, no definition message yet), ``defined`` (by a
    message on the portfolios topic), ``removed`` (a tombstone), ``unknown`` (only in a
    panel: the roster has no entry, which the job never leaves)."""
    seeded: bool = False
    tickers: list[str] | None = None
    pending: list[dict[str, Any]] = field(default_factory=list)
    """Control messages waiting for their time: timestamp and kind."""
    bars_waiting: list[int] = field(default_factory=list)
    """Bar indexes held in the portfolio's own state (waiting for statistics, or due)."""
    shard_bars: list[str] = field(default_factory=list)
    """Bars of the shard not processed yet that name it as a member (``bar_ms|index``)."""
    monitor: str = "none"
    """``panel`` (a row of a panel), ``own state``, or ``none``."""
    panel: list[Any] | None = None
    """The panel's key (tickers per portfolio, estimator), when in one."""
    statistics: dict[str, Any] | None = None
    """``n`` (observations), ``mean`` (by ticker where known), ``stats_timestamp_ms``,
    ``weights``: from its panel row or its own monitor."""
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "portfolio_id": self.portfolio_id,
            "shard": self.shard,
            "definition": self.definition,
            "seeded": self.seeded,
            "tickers": self.tickers,
            "pending": self.pending,
            "bars_waiting": self.bars_waiting,
            "shard_bars": self.shard_bars,
            "monitor": self.monitor,
            "panel": self.panel,
            "statistics": self.statistics,
            "problems": self.problems,
        }


def _definition(state: Mapping[str, Any]) -> str:
    spec = state.get("spec")
    return "removed" if spec is False else "configured" if spec is None else "defined"


def _by_ticker(values: Iterable[float], tickers: list[str] | None) -> Any:
    values = [float(v) for v in values]
    if tickers is None or len(tickers) != len(values):
        return values
    return dict(zip(tickers, values, strict=True))


def _own_statistics(monitor: Mapping[str, Any], tickers: list[str] | None) -> dict[str, Any]:
    moments = monitor["moments"]
    return {
        "n": int(moments["n"]),
        "estimator": moments.get("kind"),
        "mean": _by_ticker(moments["mean"], tickers),
        "stats_timestamp_ms": monitor.get("stats_timestamp_ms"),
        "weights": None
        if monitor.get("weights") is None
        else _by_ticker(monitor["weights"], tickers),
    }


def _panel_statistics(
    arrays: Mapping[str, Any], row: int, estimator: str, tickers: list[str] | None
) -> dict[str, Any]:
    has_weights = "has_weights" in arrays and bool(arrays["has_weights"][row])
    return {
        "n": int(arrays["n"][row]),
        "estimator": estimator,
        "mean": _by_ticker(arrays["mean"][row], tickers),
        "stats_timestamp_ms": int(arrays["stats_ts"][row]),
        "weights": _by_ticker(arrays["weights"][row], tickers) if has_weights else None,
    }


def portfolio_views(
    entries: Iterable[Mapping[str, Any]],
    configured: Mapping[str, list[str]] | None = None,
) -> list[PortfolioView]:
    """The portfolios in the state entries :func:`read_entries` lists, by id.

    ``configured``: the tickers of the configuration's portfolios (a portfolio never redefined
    keeps them). Raises :class:`DataError` for a value in a format this version does not read.
    """
    configured = configured or {}
    rosters: dict[str, dict[str, dict[str, Any]]] = {}
    panels: dict[str, Any] = {}
    shard_bars: dict[str, list[tuple[str, dict[str, tuple[str, ...]]]]] = {}
    for entry in entries:
        shard, kind, key, value = entry["shard"], entry["state"], entry["key"], entry["value"]
        if kind not in _STATES:
            raise DataError(f"state entry of an unknown state {kind!r} (shard {shard})")
        if kind == "roster":
            rosters.setdefault(shard, {})[key] = load_portfolio_state(value)
        elif kind == "panels":
            panels[shard] = load_panels(value)
        elif kind == "bars":
            members = load_member_bars(value)[2]
            shard_bars.setdefault(shard, []).append((key, members))
    views: dict[str, PortfolioView] = {}
    for shard, roster in rosters.items():
        for pid, state in roster.items():
            spec = state.get("spec")
            tickers = (
                list(spec["tickers"])
                if isinstance(spec, dict)
                else None
                if spec is False
                else configured.get(pid)
            )
            view = PortfolioView(pid, shard, _definition(state), bool(state.get("seeded")))
            view.tickers = None if tickers is None else list(tickers)
            view.pending = [
                {"timestamp": int(e[0]), "kind": str(e[3])} for e in state.get("pending", [])
            ]
            view.bars_waiting = sorted(int(k) for k in state.get("bars", {}))
            if state.get("monitor") is not None:
                view.monitor = "own state"
                view.statistics = _own_statistics(state["monitor"], view.tickers)
            if state.get("in_panel"):
                view.monitor = "panel"
                if state.get("monitor") is not None:
                    view.problems.append("marked in a panel but its state holds its monitor too")
            views[pid] = view
    for shard, shard_panels in panels.items():
        for (d, estimator), (ids, arrays) in shard_panels.items():
            for row, pid in enumerate(ids):
                if pid not in views:
                    views[pid] = PortfolioView(pid, shard, "unknown", monitor="panel")
                    views[pid].problems.append("in a panel but not in the roster")
                view = views[pid]
                if view.monitor != "panel":
                    view.problems.append(f"in panel {d}/{estimator} but not marked in_panel")
                if view.panel is not None:
                    view.problems.append(f"in more than one panel ({view.panel}, {d}/{estimator})")
                view.panel = [d, estimator]
                view.statistics = _panel_statistics(arrays, row, estimator, view.tickers)
    for view in views.values():
        if view.monitor == "panel" and view.panel is None:
            view.problems.append("marked in a panel, but no panel of its shard holds it")
    for shard, bars in shard_bars.items():
        for name, members in bars:
            for pid in members:
                # No roster entry yet: a configured portfolio none of whose bars or
                # messages has been processed.
                views.setdefault(pid, PortfolioView(pid, shard, "unknown"))
                views[pid].shard_bars.append(name)
    for view in views.values():
        view.shard_bars.sort(key=lambda name: tuple(int(p) for p in name.split("|")))
        if view.definition == "removed" and (
            view.pending or view.bars_waiting or view.monitor != "none" or view.panel
        ):
            view.problems.append("removed, but state is left")
    return [views[pid] for pid in sorted(views)]


# ----------------------------------------------------------------------------- the printing


def _monitor_text(view: PortfolioView) -> str:
    if view.monitor == "panel" and view.panel is not None:
        return f"panel {view.panel[0]}/{view.panel[1]}"
    return view.monitor


def _statistics_text(statistics: Mapping[str, Any] | None) -> str:
    if statistics is None:
        return "-"
    weights = "weights" if statistics.get("weights") is not None else "no weights"
    return f"n={statistics['n']} stats@{statistics['stats_timestamp_ms']} {weights}"


def report_lines(views: list[PortfolioView], checkpoint: Path) -> list[str]:
    """The table ``job state`` prints: one line per portfolio, then any problem found."""
    shards = sorted({v.shard for v in views}, key=lambda s: (len(s), s))
    lines = [f"{checkpoint}: {len(views)} portfolio(s) in {len(shards)} shard(s)"]
    if not views:
        return lines
    header = ("portfolio", "shard", "definition", "seeded", "pending", "bars", "monitor", "stats")
    rows = [
        (
            v.portfolio_id,
            v.shard,
            v.definition,
            "yes" if v.seeded else "no",
            str(len(v.pending)),
            str(len(v.bars_waiting) + len(v.shard_bars)),
            _monitor_text(v),
            _statistics_text(v.statistics),
        )
        for v in views
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for view in views:
        lines += [f"problem: {view.portfolio_id}: {p}" for p in view.problems]
    return lines


def report_document(views: list[PortfolioView], checkpoint: Path) -> dict[str, Any]:
    """The ``--json`` document: the checkpoint, and every portfolio as :meth:`to_dict`."""
    return {
        "checkpoint": str(checkpoint),
        "portfolios": [v.to_dict() for v in views],
        "shards": sorted({v.shard for v in views}, key=lambda s: (len(s), s)),
    }
