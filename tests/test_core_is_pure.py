"""The analytics core imports no I/O, messaging, config or dataframe library.

``streamfolio.core`` is what both engines (offline replay and the Flink job) share, so it must
stay importable with numpy and scipy alone, and of streamfolio it imports only
``streamfolio.errors``. The check runs in a fresh interpreter so that modules
other tests imported do not hide an import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import streamfolio

FORBIDDEN = (
    "confluent_kafka",
    "kafka",
    "pyflink",
    "fastavro",
    "avro",
    "pandas",
    "yaml",
    "pydantic",
    "typer",
    "requests",
    "httpx",
)

PROBE = """
import importlib, json, pkgutil, sys
import streamfolio.core as core
imported = [core.__name__]
for info in pkgutil.walk_packages(core.__path__, core.__name__ + "."):
    importlib.import_module(info.name)
    imported.append(info.name)
forbidden = tuple(sys.argv[1:])
offending = sorted(name for name in sys.modules if name.startswith(forbidden))
allowed = ("streamfolio", "streamfolio.errors", "streamfolio.core")
outside = sorted(
    name
    for name in sys.modules
    if name.startswith("streamfolio.")
    and name not in allowed
    and not name.startswith("streamfolio.core.")
)
print(json.dumps({"imported": imported, "offending": offending, "outside": outside}))
"""


def test_importing_every_core_module_pulls_in_no_forbidden_library() -> None:
    src = str(Path(next(iter(streamfolio.__path__))).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, *FORBIDDEN],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout)
    # The walk found the modules under test (so an empty walk cannot pass vacuously).
    for module in ("moments", "metrics", "returns", "policy", "portfolio", "optimize"):
        assert f"streamfolio.core.{module}" in result["imported"]
    assert result["offending"] == []
    assert result["outside"] == []
