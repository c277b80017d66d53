"""Finding the Java that runs the development tools (the local Kafka broker needs Java 17+).

:func:`find_java` takes ``$JAVA_HOME/bin/java`` if ``JAVA_HOME`` is set, else ``java`` on
``PATH``, and checks its major version with ``java -version``; :func:`java_major` reads that
version from the text ``java -version`` prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from streamfolio.devtools import ToolError

__all__ = ["find_java", "java_major"]


def java_major(version_text: str) -> int | None:
    """The major version in the output of ``java -version``, or None if it names none.

    >>> java_major('openjdk version "17.0.15" 2025-04-15')
    17
    >>> java_major('java version "1.8.0_392"')
    8
    >>> java_major("no version here") is None
    True
    """
    found = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if not found:
        return None
    # "1.8.0_392" is Java 8; "17.0.15" is Java 17.
    return int(found[2] or 0) if found[1] == "1" else int(found[1])


def find_java(minimum: int, *, purpose: str) -> str:
    """The ``java`` to run: ``$JAVA_HOME/bin/java`` if set, else the one on ``PATH``.

    ``purpose`` completes "Java N+ is needed to …" in the messages. Raises :class:`ToolError`
    if there is none, if it cannot run, or if it is older than ``minimum``.
    """
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).is_file():
        raise ToolError(
            f"Java {minimum}+ is needed to {purpose} and none was found "
            f"({'JAVA_HOME=' + home if home else 'no java on PATH'}); install one, e.g. "
            f"`apt-get install openjdk-{minimum}-jre-headless`, or set JAVA_HOME"
        )
    try:
        shown = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"cannot run {java} -version: {exc}") from None
    major = java_major(shown.stderr + shown.stdout)
    if major is not None and major < minimum:
        raise ToolError(
            f"{java} is Java {major}; Java {minimum}+ is needed to {purpose}: install "
            f"openjdk-{minimum}-jre-headless (or newer) and put it first on PATH or in JAVA_HOME"
        )
    return java
