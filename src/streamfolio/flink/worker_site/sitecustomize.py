"""Imports the job's modules once, in one thread, as each Python worker of the job starts.

Why: on a cluster, PyFlink's process mode runs the job's Python functions in fresh worker
processes (Apache Beam SDK harnesses) that unpickle them, importing their modules, in several
threads at once. CPython 3.11 does not serialise the first import of a package against the
first import of one of its modules from another thread: when one thread runs
``streamfolio/core/__init__.py`` while another imports ``streamfolio.core.portfolio``, each waits
for a module lock the other holds, CPython breaks the deadlock by handing one of them a module
still being initialised, and it fails with ``ImportError: cannot import name 'PortfolioMonitor'
from partially initialized module``; the job restarts for ever. Measured on the local cluster:
every start with ticks waiting failed so. (``job run``'s MiniCluster never shows it: its
workers run inside the driver, which imported everything first.)

How: ``streamfolio job submit`` ships this folder with ``--pyFiles``, which puts it first on
the workers' (and the ``flink run`` client's) ``PYTHONPATH``, where Python's ``site`` imports
``sitecustomize`` at start-up, before any thread exists. Any other ``sitecustomize`` this one
hides is run after it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

JOB_MODULES = (
    "streamfolio.flink.operators",
    "streamfolio.flink.prices",
    "streamfolio.flink.closes",
    "streamfolio.flink.connectors",
)
"""The modules whose functions the workers run, and through them everything they import."""
WORKER_MAIN = "pyflink.fn_execution.beam.beam_boot"
"""What a worker runs (``python -m``); other Pythons started with this ``PYTHONPATH`` (the
client, PyFlink's version checks) skip the preload."""


def is_worker(argv: list[str]) -> bool:
    """Whether the interpreter's command line (``sys.orig_argv``) is a PyFlink worker's.

    >>> is_worker(["python", "-m", WORKER_MAIN, "--id=1-1"]), is_worker(["python", "-c", "1"])
    (True, False)
    """
    return WORKER_MAIN in argv


def preload() -> None:
    """Import :data:`JOB_MODULES` (a worker without the job's dependencies carries on: the
    job's own import reports what is missing)."""
    for name in JOB_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            return


def run_hidden_sitecustomize() -> None:
    """Run the ``sitecustomize`` that this one hides on ``sys.path``, if there is one."""
    here = str(Path(__file__).resolve().parent)
    path = [p for p in sys.path if str(Path(p or ".").resolve()) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", path)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


if __name__ == "sitecustomize":  # imported by site, not as streamfolio.flink.worker_site...
    if is_worker(list(getattr(sys, "orig_argv", ()))):
        preload()
    run_hidden_sitecustomize()
