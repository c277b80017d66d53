"""Files the development tools share: the checkout's root, an advisory lock, a log's tail.

The lock serialises work that two processes must not do at once (fetching jars, starting a
broker); it is advisory (``flock``) and dies with its process, so a crash never leaves it held.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

__all__ = ["TAIL_LINES", "find_checkout", "locked", "tail", "tail_lines"]

TAIL_LINES = 30
"""How many last lines of a log or of a tool's output an error message quotes."""


def find_checkout(marker: Path, start: Path | None = None) -> Path | None:
    """The nearest folder at or above ``start`` (default: the working directory) that holds
    ``marker`` (a path relative to it), else the checkout this package runs from if it holds
    ``marker``, else None."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / marker).is_file():
            return folder
    source = Path(__file__).resolve().parents[3]  # src/streamfolio/devtools/files.py
    if (source / marker).is_file():
        return source
    return None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created, with its folder, if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail_lines(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``.

    >>> tail_lines("a\\nb\\nc", 2)
    'b\\nc'
    """
    return "\n".join(text.splitlines()[-lines:])


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of the file at ``path``; empty if it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return tail_lines(text, lines)
