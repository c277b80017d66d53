"""Starting a long-lived JVM (a Kafka broker, a Flink JobManager or TaskManager) detached from
the caller: :func:`start_detached`."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["DetachError", "start_detached"]

# A throwaway shell starts the command in the background and exits: the process is re-parented
# to init, so it outlives the caller, is never left a zombie of it (which would look alive, e.g.
# to a test that killed it with kill -9), and Popen has no running child to warn about.
# start_new_session puts it in a session of its own, out of reach of the terminal's Ctrl-C.
_LAUNCHER = 'out=$1; shift; "$@" </dev/null >>"$out" 2>&1 & echo $!'


class DetachError(OSError):
    """The command could not be started; the message says why."""


def start_detached(
    command: Sequence[str], out_file: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start ``command`` in the background, its output appended to ``out_file``; its pid.

    ``env`` (default: this process's environment) is the command's environment.

    >>> import os, tempfile
    >>> out = Path(tempfile.mkdtemp()) / "out.log"
    >>> pid = start_detached(["sh", "-c", "echo started"], out)
    >>> pid > 0 and pid != os.getpid()
    True
    """
    try:
        run = subprocess.run(
            ["/bin/sh", "-c", _LAUNCHER, "sh", str(out_file), *command],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            start_new_session=True,
            env=None if env is None else dict(env),
        )
        return int(run.stdout.strip())
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise DetachError(str(exc)) from None
