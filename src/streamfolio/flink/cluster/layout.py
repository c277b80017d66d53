"""The local cluster's files: where everything lives in its data folder, and its configuration.

Everything comes from the apache-flink wheel (:func:`distribution`: ``pyflink/bin``, ``lib``,
``opt``, ``conf``): no Flink download. The data folder holds what the scripts read and write:

* ``conf/`` — ``config.yaml`` (Flink 2.x, flat keys; :func:`cluster_configuration`) over the
  wheel's own, and its log4j/logback files; every process and ``flink run`` read it
  (``FLINK_CONF_DIR``);
* ``lib/`` — links to the wheel's ``lib/*.jar`` plus ``opt/flink-python-*.jar``
  (``FLINK_LIB_DIR``): the Python runtime on the cluster's own class path, so the job's
  restarts reuse it (PEMJA's native library loads once per JVM, never in a second user class
  loader);
* ``log/`` — each process's log, ``.out`` and ``.err`` (``FLINK_LOG_DIR``), and ``flink run``'s;
* ``run/`` — ``processes.json`` (the pids ``flink up`` started) and the scripts' pid files;
* ``checkpoints/``, ``savepoints/`` — the defaults for jobs that name none (the job names its own
  checkpoint folder, ``flink.checkpoint_dir``), shared by every process of the machine;
* ``tmp/`` — Flink's working files (``io.tmp.dirs``: blobs, Python environments).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from streamfolio.config.sections import FlinkClusterSettings

__all__ = [
    "HEARTBEAT_INTERVAL_MS",
    "HEARTBEAT_TIMEOUT_MS",
    "ClusterLayout",
    "cluster_configuration",
    "distribution",
    "flatten",
    "write_configuration",
]

HEARTBEAT_INTERVAL_MS = 2_000
HEARTBEAT_TIMEOUT_MS = 10_000
"""A TaskManager that stops answering is given up after this (Flink's default: 50 s), so a job
whose TaskManager died restarts on the others within seconds, not a minute (a refused
connection, as after ``kill -9``, is noticed sooner still: two failed heartbeats)."""


def distribution() -> Path:
    """The Flink distribution inside the apache-flink wheel (``site-packages/pyflink``)."""
    import pyflink

    return Path(pyflink.__file__).resolve().parent


@dataclass(frozen=True)
class ClusterLayout:
    """The paths of one local cluster, all under ``root`` (its data folder).

    >>> layout = ClusterLayout(Path("/data"))
    >>> layout.conf_dir, layout.processes_file
    (PosixPath('/data/conf'), PosixPath('/data/run/processes.json'))
    """

    root: Path

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def lib_dir(self) -> Path:
        return self.root / "lib"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def processes_file(self) -> Path:
        return self.run_dir / "processes.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.root / "checkpoints"

    @property
    def savepoint_dir(self) -> Path:
        return self.root / "savepoints"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with what the Flink scripts (and the JVMs and Python workers they start)
        need: this cluster's folders, and this interpreter's ``bin`` first on ``PATH`` (thread
        mode loads PEMJA from the Python found there; see ``runtime.prepare_process``)."""
        bin_dir = str(Path(sys.executable).parent)
        path = base.get("PATH", "")
        return {
            **base,
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LIB_DIR": str(self.lib_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.run_dir),
            "PATH": bin_dir + (":" + path if path else ""),
            "OPENBLAS_NUM_THREADS": base.get("OPENBLAS_NUM_THREADS", "1"),
        }


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flink's nested YAML as flat ``a.b.c`` keys (Flink 2.x reads both).

    >>> flatten({"rest": {"address": "localhost", "port": 8081}, "parallelism.default": 1})
    {'rest.address': 'localhost', 'rest.port': 8081, 'parallelism.default': 1}
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def cluster_configuration(
    cluster: FlinkClusterSettings,
    layout: ClusterLayout,
    base: Mapping[str, Any],
    metrics_port: int = 0,
) -> dict[str, str]:
    """The cluster's ``config.yaml``: the wheel's own (``base``, flattened: its JVM options),
    with this cluster's ports, sizes and folders, everything bound to localhost. With
    ``metrics_port`` (``metrics.job_port``), Flink's Prometheus reporter: the JobManager and
    each TaskManager take the first free port from it on (the plugin is in the wheel's
    ``plugins``, which the cluster's scripts load).

    >>> conf = cluster_configuration(
    ...     FlinkClusterSettings(rest_port=18081), ClusterLayout(Path("/d")), {})
    >>> conf["rest.port"], conf["rest.bind-address"], conf["taskmanager.numberOfTaskSlots"]
    ('18081', 'localhost', '1')
    >>> conf["execution.checkpointing.savepoint-dir"]
    'file:///d/savepoints'
    """
    python = sys.executable
    ours = {
        "jobmanager.rpc.address": "localhost",
        "jobmanager.rpc.port": str(cluster.rpc_port),
        "jobmanager.bind-host": "localhost",
        "jobmanager.memory.process.size": cluster.jobmanager_memory,
        "taskmanager.host": "localhost",
        "taskmanager.bind-host": "localhost",
        "taskmanager.numberOfTaskSlots": str(cluster.slots),
        "taskmanager.memory.process.size": cluster.taskmanager_memory,
        "rest.address": "localhost",
        "rest.bind-address": "localhost",
        "rest.port": str(cluster.rest_port),
        "parallelism.default": "1",
        "heartbeat.interval": str(HEARTBEAT_INTERVAL_MS),
        "heartbeat.timeout": str(HEARTBEAT_TIMEOUT_MS),
        "python.executable": python,
        "python.client.executable": python,
        "execution.checkpointing.dir": layout.checkpoint_dir.as_uri(),
        "execution.checkpointing.savepoint-dir": layout.savepoint_dir.as_uri(),
        "io.tmp.dirs": str(layout.tmp_dir),
        "env.log.dir": str(layout.log_dir),
        "env.pid.dir": str(layout.run_dir),
        # The JVMs' own stdout/stderr to <log>.out/.err next to their logs, not to a terminal.
        "env.stdout-err.redirect-to-file": "true",
    }
    if metrics_port:
        from streamfolio.flink.runtime import prometheus_reporter

        ours |= prometheus_reporter(f"{metrics_port}-{metrics_port + 16}")
    return {**{k: str(v) for k, v in flatten(base).items()}, **ours}


def write_configuration(
    cluster: FlinkClusterSettings, layout: ClusterLayout, metrics_port: int = 0
) -> None:
    """Write ``conf/`` and ``lib/`` for ``cluster`` (again at every ``up``: a changed setting
    applies to the processes started next) and make the other folders."""
    dist = distribution()
    for folder in (
        layout.conf_dir,
        layout.lib_dir,
        layout.log_dir,
        layout.run_dir,
        layout.checkpoint_dir,
        layout.savepoint_dir,
        layout.tmp_dir,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    for source in sorted((dist / "conf").iterdir()):
        if source.is_file() and source.name != "config.yaml":
            (layout.conf_dir / source.name).write_bytes(source.read_bytes())
    base = yaml.safe_load((dist / "conf" / "config.yaml").read_text(encoding="utf-8")) or {}
    conf = cluster_configuration(cluster, layout, base, metrics_port)
    text = "# Written by `streamfolio flink up` at every start: edit flink.cluster instead.\n"
    text += yaml.safe_dump({k: _scalar(v) for k, v in conf.items()}, sort_keys=True, width=1 << 16)
    (layout.conf_dir / "config.yaml").write_text(text, encoding="utf-8")
    _link_jars(dist, layout.lib_dir)


def _scalar(value: str) -> str | int | bool:
    """A value as YAML should hold it: Flink's shell scripts read some of the file as text
    (``env.*`` keys), where a quoted ``'true'`` is not ``true``.

    >>> _scalar("true"), _scalar("2000"), _scalar("1536m")
    (True, 2000, '1536m')
    """
    if value in ("true", "false"):
        return value == "true"
    return int(value) if value.isdigit() else value


def _link_jars(dist: Path, lib: Path) -> None:
    """``lib/``: links to the wheel's ``lib/*.jar`` and ``opt/flink-python-*.jar``, nothing else
    (a link left from another wheel version is removed)."""
    wanted = {jar.name: jar for jar in (dist / "lib").glob("*.jar")}
    wanted |= {jar.name: jar for jar in (dist / "opt").glob("flink-python*.jar")}
    for present in lib.iterdir():
        if present.name not in wanted or present.resolve() != wanted[present.name]:
            present.unlink()
    for name, jar in wanted.items():
        link = lib / name
        if not link.is_symlink():
            link.symlink_to(jar)
