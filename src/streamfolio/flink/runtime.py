"""The job's execution environment: Python thread mode, checkpoints, state backend, restarts.

PyFlink 2.x has no setters for the state backend or checkpoint storage: everything is a
configuration key (research/streaming.md §3.2), built here as a plain mapping by
:func:`flink_configuration` (so it can be read and tested without a JVM) and handed to
``StreamExecutionEnvironment.get_execution_environment``.

Resuming: ``execution.state-recovery.path`` names the checkpoint to restore (offsets of every
source and all keyed state). :func:`latest_checkpoint` finds the newest complete one retained
under ``flink.checkpoint_dir``; checkpoints are retained when the job is cancelled or killed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from streamfolio.config import Settings
from streamfolio.errors import StreamfolioError

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

__all__ = [
    "PYTHON_MODE_ENV",
    "RESTART_ATTEMPTS_BEFORE_RESET",
    "CheckpointNotFoundError",
    "JobOptions",
    "create_environment",
    "flink_configuration",
    "latest_checkpoint",
    "prepare_process",
    "prometheus_reporter",
]

RESTART_INITIAL_BACKOFF_S = 1
RESTART_MAX_BACKOFF_S = 30
"""Restarts wait 1 s, 2 s, 4 s... doubling up to this (each ±10 %, jittered)."""
RESTART_RESET_AFTER_MIN = 10
"""A job that has run this long without failing starts again from the first back-off and a
fresh count of attempts: failures that far apart are unrelated."""
RESTART_ATTEMPTS_BEFORE_RESET = 40
"""Restarts in a row (no :data:`RESTART_RESET_AFTER_MIN` without a failure in between) before the
job fails for good. 40 outlasts a broker outage of at least 16 min even if every restart failed
at once (back-offs of 1 to 16 s, then 35 of 30 s, all at the jitter's low end: 0.9 × 1,081 s);
during a real outage each attempt also waits for the Kafka clients' timeouts, so for longer.
And a deterministic bug still ends the job, after about 18 min, rather than restarting it
forever (Flink's default with checkpointing)."""
TOLERABLE_FAILED_CHECKPOINTS = 0
"""Checkpoints in a row that may time out, or fail in their asynchronous part, before the job
restarts: none (Flink's default), weighed for broker outages. An outage fails a checkpoint only
in a sink's synchronous part (at-least-once: records it cannot deliver within the producer's
delivery timeout; exactly-once: 60 s waiting for the next transaction's producer id), which
restarts the job whatever this says; with nothing to deliver a checkpoint completes, the state
being on local disk. And tolerating time-outs (10 min each) could keep an exactly-once
transaction open past its 15 min timeout, when the broker aborts it."""
REST_PORT_ENV = "STREAMFOLIO_FLINK_REST_PORT"
"""A port for the local MiniCluster's REST API and web UI (watermarks, metrics, back pressure
of a running ``job run``); unset: a free port Flink picks."""
PYTHON_MODE_ENV = "STREAMFOLIO_FLINK_PYTHON_MODE"
"""``thread`` (default) or ``process``: how Flink runs the job's Python functions. Process mode
(a separate Python worker per task, via Apache Beam) is slower but isolates the functions from
the JVM; an escape hatch should thread mode misbehave (docs/flink.md, caveats)."""
BUFFER_TIMEOUT_MS = 5
"""Network buffers are flushed at least this often: a bar's results do not wait for a full
buffer (Flink's default is 100 ms)."""

BUNDLE_SIZE = 100_000
"""Records a Python worker may hold before Flink waits for its results (process mode)."""
BUNDLE_TIME_MS = 100
"""...and how long: results are at most this late (plus the work itself)."""
ARROW_BATCH_SIZE = 1000
"""Ticks per Arrow batch handed to the tick decoder."""

RESTART_STRATEGY: Mapping[str, str] = {
    # Exponential: a broker outage fails the job's Kafka clients again and again; restarting at
    # a growing interval outlasts it without hammering, and resumes quickly after a blip.
    "restart-strategy.type": "exponential-delay",
    "restart-strategy.exponential-delay.initial-backoff": f"{RESTART_INITIAL_BACKOFF_S} s",
    "restart-strategy.exponential-delay.max-backoff": f"{RESTART_MAX_BACKOFF_S} s",
    "restart-strategy.exponential-delay.backoff-multiplier": "2.0",
    "restart-strategy.exponential-delay.jitter-factor": "0.1",
    "restart-strategy.exponential-delay.reset-backoff-threshold": f"{RESTART_RESET_AFTER_MIN} min",
    "restart-strategy.exponential-delay.attempts-before-reset-backoff": str(
        RESTART_ATTEMPTS_BEFORE_RESET
    ),
}
"""Flink's restart strategy for the job (keys of Flink 2.2's ``RestartStrategyOptions``)."""

Delivery = Literal["at-least-once", "exactly-once"]
Offsets = Literal["latest", "earliest"]


class CheckpointNotFoundError(StreamfolioError):
    """``--from-checkpoint latest`` found no complete checkpoint."""


@dataclass(frozen=True)
class JobOptions:
    """How to run the job: the config's ``flink`` section, overridden from the command line."""

    parallelism: int
    delivery: Delivery
    starting_offsets: Offsets
    checkpoint_dir: Path
    from_checkpoint: str | None = None
    """A checkpoint or savepoint path, ``"latest"``, or None for a fresh start."""
    bounded: bool = False
    job_name: str = "streamfolio"
    transactional_id_prefix: str = "streamfolio"

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        parallelism: int | None = None,
        from_checkpoint: str | None = None,
        starting_offsets: Offsets | None = None,
        delivery: Delivery | None = None,
        bounded: bool = False,
    ) -> JobOptions:
        """The options of ``settings``, with the given overrides.

        >>> from streamfolio.config import example_config_path, load_config
        >>> o = JobOptions.from_settings(load_config(example_config_path(), environ={}),
        ...                              parallelism=2)
        >>> o.parallelism, o.delivery, o.starting_offsets
        (2, 'at-least-once', 'latest')
        """
        flink = settings.flink
        return cls(
            parallelism=parallelism or flink.parallelism,
            delivery=delivery or flink.delivery,
            starting_offsets=starting_offsets or flink.starting_offsets,
            checkpoint_dir=Path(flink.checkpoint_dir).resolve(),
            from_checkpoint=from_checkpoint,
            bounded=bounded,
            # Transactional ids must be unique per job on a cluster: the client id names it.
            transactional_id_prefix=f"{settings.kafka.client_id}-job",
        )

    def with_restore_path(self) -> JobOptions:
        """The options with ``from_checkpoint`` resolved to a path (``latest`` looked up)."""
        if self.from_checkpoint != "latest":
            return self
        found = latest_checkpoint(self.checkpoint_dir)
        if found is None:
            raise CheckpointNotFoundError(
                f"no complete checkpoint under {self.checkpoint_dir}; start without "
                "--from-checkpoint"
            )
        return replace(self, from_checkpoint=str(found))


def latest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``checkpoint_dir`` (``<job id>/chk-<n>/``).

    Complete means its ``_metadata`` file exists: Flink writes it last, so a checkpoint cut off
    by a crash is never chosen.
    """
    candidates = [
        metadata.parent
        for metadata in Path(checkpoint_dir).glob("*/chk-*/_metadata")
        if metadata.is_file()
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda p: ((p / "_metadata").stat().st_mtime, p.name))


def prepare_process(environ: dict[str, str] | None = None) -> None:
    """Set the environment that the Flink JVM (started next) and its Python threads inherit.

    * The interpreter's ``bin`` first on ``PATH``: thread mode loads ``pemja`` from the Python
      found there, even with ``python.executable`` set (research/streaming.md, addendum).
    * ``OPENBLAS_NUM_THREADS=1``: numpy runs inside Flink's task threads; letting OpenBLAS spawn
      its own threads per operator only oversubscribes the cores.

    Must run before the first PyFlink object is created (that starts the JVM).
    """
    env = os.environ if environ is None else environ
    bin_dir = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        env["PATH"] = bin_dir + (os.pathsep + path if path else "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")


def lib_with_reporter(into: Path) -> Path | None:
    """A ``lib`` folder for the local MiniCluster's JVM: the apache-flink wheel's jars and its
    Prometheus reporter (``plugins/metrics-prometheus``), as links in ``into``; None without
    PyFlink. A MiniCluster loads reporters from its class path only (not from the plugins
    folder a cluster reads), and PyFlink builds that class path from ``FLINK_LIB_DIR``.
    """
    import importlib.util

    found = importlib.util.find_spec("pyflink")
    if found is None or not found.submodule_search_locations:
        return None
    home = Path(next(iter(found.submodule_search_locations)))
    jars = [*sorted((home / "lib").glob("*.jar"))]
    jars += sorted((home / "plugins" / "metrics-prometheus").glob("*.jar"))
    into.mkdir(parents=True, exist_ok=True)
    for jar in jars:
        link = into / jar.name
        if not link.exists():
            with contextlib.suppress(FileExistsError):  # another job linked it meanwhile
                link.symlink_to(jar)
    return into


def flink_configuration(
    settings: Settings, options: JobOptions, jars: list[Path]
) -> dict[str, str]:
    """The Flink configuration of the job (``options.from_checkpoint`` already resolved).

    >>> from streamfolio.config import example_config_path, load_config
    >>> s = load_config(example_config_path(), environ={})
    >>> conf = flink_configuration(s, JobOptions.from_settings(s), [])
    >>> conf["python.execution-mode"], conf["state.backend.type"], conf["restart-strategy.type"]
    ('thread', 'hashmap', 'exponential-delay')
    >>> conf["restart-strategy.exponential-delay.attempts-before-reset-backoff"]
    '40'
    >>> two = flink_configuration(s, JobOptions.from_settings(s, parallelism=2), [])
    >>> two["python.execution-mode"]
    'process'
    """
    flink = settings.flink
    # Thread mode hangs at parallelism 2 and more: several tasks never leave INITIALIZING, their
    # threads in pemja's openPythonInterpreter (seen on a MiniCluster and on a session cluster).
    default = "thread" if options.parallelism == 1 else "process"
    mode = os.environ.get(PYTHON_MODE_ENV, default)
    if mode not in ("thread", "process"):
        raise StreamfolioError(f"{PYTHON_MODE_ENV}={mode!r}: use thread or process")
    conf = {
        # Python functions run in the TaskManager's JVM via PEMJA: 2-3x the throughput of the
        # separate-process mode and sub-millisecond latency (research/streaming.md §4).
        "python.execution-mode": mode,
        "python.executable": sys.executable,
        "python.client.executable": sys.executable,
        "parallelism.default": str(options.parallelism),
        "execution.buffer-timeout.interval": f"{BUFFER_TIMEOUT_MS} ms",
        # The tick decoder (a pandas UDF) runs in its own Python process. A large bundle lets
        # the JVM keep sending Arrow batches while Python decodes the previous ones instead of
        # waiting for each (1000, the default, halved the job's ticks/s); the bundle time
        # bounds what that adds to latency. Per-bar functions see few records either way.
        "python.fn-execution.bundle.size": str(BUNDLE_SIZE),
        "python.fn-execution.bundle.time": str(BUNDLE_TIME_MS),
        "python.fn-execution.arrow.batch.size": str(ARROW_BATCH_SIZE),
        "execution.checkpointing.interval": f"{flink.checkpoint_interval_ms} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.dir": options.checkpoint_dir.as_uri(),
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.checkpointing.num-retained": "2",
        "state.backend.type": flink.state_backend,
        "execution.checkpointing.tolerable-failed-checkpoints": str(TOLERABLE_FAILED_CHECKPOINTS),
        **RESTART_STRATEGY,
    }
    if flink.state_backend == "rocksdb":
        conf["execution.checkpointing.incremental"] = "true"
    if os.environ.get(REST_PORT_ENV):
        conf["rest.port"] = conf["rest.bind-port"] = os.environ[REST_PORT_ENV]
    if jars:
        conf["pipeline.jars"] = ";".join(j.resolve().as_uri() for j in jars)
    if settings.metrics.job_port:
        conf.update(prometheus_reporter(settings.metrics.job_port))
    if options.from_checkpoint:
        path = options.from_checkpoint
        conf["execution.state-recovery.path"] = (
            Path(path).resolve().as_uri() if "://" not in path else path
        )
    return conf


def prometheus_reporter(port: int | str) -> dict[str, str]:
    """Flink settings of its Prometheus reporter (the plugin shipped in the apache-flink wheel,
    ``pyflink/plugins/metrics-prometheus``, which the gateway finds through
    ``FLINK_PLUGINS_DIR``) on ``port``: a number, or a range such as ``"9250-9259"`` for a
    cluster whose JobManager and TaskManagers each take one (docs/operations.md).

    >>> prometheus_reporter(9249)["metrics.reporter.prom.port"]
    '9249'
    """
    return {
        "metrics.reporters": "prom",
        "metrics.reporter.prom.factory.class": (
            "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
        ),
        "metrics.reporter.prom.port": str(port),
    }


def create_environment(
    settings: Settings, options: JobOptions, *, jars: list[Path] | None = None
) -> StreamExecutionEnvironment:
    """A ``StreamExecutionEnvironment`` configured for the job (resolves ``latest``)."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from streamfolio.flink.connectors import job_jars

    prepare_process()
    if settings.metrics.job_port:
        import tempfile

        lib = lib_with_reporter(Path(tempfile.gettempdir()) / "streamfolio-flink-lib")
        if lib is not None and "FLINK_LIB_DIR" not in os.environ:
            # With FLINK_HOME unset, PyFlink points FLINK_LIB_DIR at the wheel's lib again.
            os.environ.setdefault("FLINK_HOME", str(next(lib.glob("*.jar")).resolve().parents[1]))
            os.environ["FLINK_LIB_DIR"] = str(lib)
    resolved = options.with_restore_path()
    conf = Configuration()
    for key, value in flink_configuration(
        settings, resolved, job_jars() if jars is None else jars
    ).items():
        conf.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(resolved.parallelism)
    return env


def describe(conf: Mapping[str, str]) -> str:
    """``key=value`` lines, for logs and ``job submit``."""
    return "\n".join(f"{k}={v}" for k, v in sorted(conf.items()))
