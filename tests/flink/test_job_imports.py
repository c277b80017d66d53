"""The job's Python functions load neither the optimisers nor scipy.

Seen on a 10,000-portfolio start (py-spy on the MiniCluster's JVM): every task thread of the
shared embedded interpreter waiting in an import while one of them initialised
``scipy.optimize._highspy._highs_wrapper``, a pybind11 extension, which takes the GIL through
``PyGILState_Ensure``: in a thread PEMJA made, that waits for ever. It came with
``streamfolio.core`` importing every submodule (and ``portfolios`` the policy) for names the
job never uses; now they load on first use (docs/flink.md, caveats).
"""

from __future__ import annotations

import subprocess
import sys

JOB_MODULES = (
    "streamfolio.flink.job",
    "streamfolio.flink.operators",
    "streamfolio.flink.prices",
    "streamfolio.flink.closes",
    "streamfolio.flink.bars",
    "streamfolio.flink.definitions",
    "streamfolio.flink.connectors",
)


def test_the_jobs_modules_import_no_scipy_and_no_optimiser() -> None:
    code = (
        f"import sys\nimport {', '.join(JOB_MODULES)}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'cvxpy', 'pypfopt')"
        " or m.startswith(('streamfolio.core.optimize', 'streamfolio.core.black_litterman'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_the_cores_names_still_resolve() -> None:
    import streamfolio.core as core

    for name in core.__all__:
        assert getattr(core, name) is not None
    assert core.max_sharpe.__module__.startswith("streamfolio.core.optimize")
