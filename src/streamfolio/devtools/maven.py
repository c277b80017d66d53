"""Maven, run once to fill a cache folder of jars (the local broker's, the Flink job's).

:func:`cached_folder` is the one implementation of those caches (``.cache/kafka/lib/<version>``,
``.cache/flink/lib``): when the folder's ``.complete`` file holds the expected stamp it is
returned as it is; otherwise, under a lock beside it (two processes started at once fetch once:
the second waits, then finds the cache complete), the caller's ``fill`` fills a scratch folder,
which is stamped and renamed into place only when complete. An interrupted fetch never leaves a
half-filled cache behind; it is simply redone. ``fill`` runs Maven with :func:`run_maven`
(``dependency:copy-dependencies`` into the scratch folder, ``package``), having found it with
:func:`find_mvn`.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from streamfolio.devtools import ToolError
from streamfolio.devtools.files import locked, tail_lines

__all__ = ["STAMP_FILE", "cached_folder", "find_mvn", "is_complete", "run_maven"]

STAMP_FILE = ".complete"
"""The file of a cache folder that says it is complete, holding the stamp it was filled for."""


def is_complete(folder: Path, stamp: str) -> bool:
    """True if ``folder`` was filled completely for ``stamp`` (a version, a digest)."""
    marker = folder / STAMP_FILE
    return marker.is_file() and marker.read_text(encoding="utf-8").strip() == stamp


def cached_folder(folder: Path, stamp: str, fill: Callable[[Path], None]) -> Path:
    """``folder``, filled by ``fill(scratch)`` unless it is already complete for ``stamp``.

    ``fill`` gets an empty scratch folder beside ``folder``; when it returns, the scratch folder
    is stamped and replaces ``folder`` (an outdated or incomplete earlier one). If it raises, the
    scratch folder is removed and ``folder`` is left as it was.
    """
    if is_complete(folder, stamp):
        return folder
    with locked(folder.parent / f".{folder.name}.lock"):
        if is_complete(folder, stamp):  # filled by another process while this one waited
            return folder
        # Under the lock no one else fills it: a leftover is from a process that was killed.
        partial = folder.parent / f".{folder.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            fill(partial)
            (partial / STAMP_FILE).write_text(f"{stamp}\n", encoding="utf-8")
            shutil.rmtree(folder, ignore_errors=True)
            partial.rename(folder)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def find_mvn(purpose: str, fix: str) -> str:
    """The ``mvn`` on ``PATH``. ``purpose`` completes "Maven is needed once, to …", ``fix``
    the alternative to installing it ("put mvn on PATH")."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolError(
            f"Maven (mvn) is needed once, to {purpose}; install it (`apt-get install maven`) "
            f"or {fix}"
        )
    return mvn


def run_maven(
    mvn: str,
    pom: Path,
    *args: str,
    what: str,
    quiet: bool = True,
    batch: bool = False,
    timeout: float | None = None,
    produces: Path | None = None,
    hint: str | None = None,
) -> str:
    """Run ``mvn -f pom args…`` (with ``-B`` if ``batch``, ``-q`` if ``quiet``); return its
    output.

    Raises :class:`ToolError` quoting the command and the last lines of its output if it fails,
    or if it succeeds without writing ``produces``; ``what`` ("fetching the Kafka jars") and
    ``hint`` (a likely cause) complete the message. Paths in ``args`` should be absolute: Maven
    resolves relative ones against the pom's folder.
    """
    command = [mvn, *(["-B"] if batch else []), *(["-q"] if quiet else []), "-f", str(pom), *args]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        minutes = (timeout or 0) / 60
        raise ToolError(
            f"Maven did not finish {what} in {minutes:g} minutes; check the network"
        ) from None
    output = run.stdout + run.stderr
    if run.returncode != 0 or (produces is not None and not produces.is_file()):
        because = f"exit {run.returncode}" + (f"; {hint}" if hint else "")
        if run.returncode == 0:
            because += f"; {produces} was not written"
        raise ToolError(
            f"Maven failed {what} ({because}):\n$ {' '.join(command)}\n{tail_lines(output)}"
        )
    return output
