"""The engines under the demo: the local Kafka broker or cluster, and with ``--flink cluster``
the local Flink session cluster. The demo starts what is not running and, at its end, stops
only what it started (:class:`Engines`): a broker or cluster found running is someone's to keep.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from streamfolio.config import Settings

if TYPE_CHECKING:
    from streamfolio.flink.cluster import LocalFlinkCluster
    from streamfolio.kafka.local import LocalCluster, LocalKafka

__all__ = ["FLINK_MODES", "KAFKA_TIMEOUT_S", "Engines", "FlinkMode", "local_kafka"]

FlinkMode = Literal["local", "cluster"]
FLINK_MODES: tuple[FlinkMode, ...] = ("local", "cluster")
KAFKA_TIMEOUT_S = 120.0
"""How long the single broker may take to answer (as ``kafka up``)."""
CLUSTER_TIMEOUT_S = 240.0
"""How long a cluster (three Kafka nodes, or the Flink JVMs) may take to answer: cold JVMs on
a busy 2-core machine, twice ``kafka up``'s default."""

Progress = Callable[[str], None]


def local_kafka(settings: Settings, root: Path, progress: Progress) -> LocalKafka | LocalCluster:
    """The broker ``streamfolio kafka up`` starts for ``settings``: the single development
    broker, or the (secured) multi-broker cluster when the configuration asks for one
    (:func:`~streamfolio.kafka.local.wants_cluster`: ``kafka.local.brokers`` above 1, a secured
    protocol, or a cluster already in the data dir)."""
    from streamfolio.kafka.local import LocalCluster, LocalKafka, wants_cluster

    single = LocalKafka(settings.kafka, root, progress=progress)
    nodes = wants_cluster(settings.kafka, single.data_dir)
    if nodes is None:
        return single
    return LocalCluster(settings, root, brokers=nodes, progress=progress)


class Engines:
    """Kafka (:func:`local_kafka`) and, for ``flink="cluster"``, the local Flink session
    cluster of ``flink.cluster``; :meth:`down` stops whichever of them :meth:`up_kafka` and
    :meth:`up_flink` found stopped and started."""

    def __init__(
        self,
        settings: Settings,
        root: Path,
        progress: Progress,
        *,
        flink: FlinkMode = "local",
        kafka: LocalKafka | LocalCluster | None = None,
        flink_cluster: LocalFlinkCluster | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka if kafka is not None else local_kafka(settings, root, progress)
        self.flink: LocalFlinkCluster | None = flink_cluster
        if self.flink is None and flink == "cluster":
            from streamfolio.flink.cluster import LocalFlinkCluster

            self.flink = LocalFlinkCluster(settings, progress=progress)  # as `flink up`
        self.started_kafka = False
        self.started_flink = False
        self._progress = progress

    @property
    def is_cluster(self) -> bool:
        """Whether Kafka is a multi-node cluster (its servers: every node)."""
        from streamfolio.kafka.local import LocalCluster

        return isinstance(self.kafka, LocalCluster)

    def up_kafka(self) -> None:
        """Start the broker or cluster unless it runs, and create the configured topics."""
        from streamfolio.kafka.admin import topic_specs

        # Known before up(): a start cut short is stopped again at the end.
        self.started_kafka = not self.kafka.is_running()
        timeout = CLUSTER_TIMEOUT_S if self.is_cluster else KAFKA_TIMEOUT_S
        self.kafka.up(topic_specs(self.settings), timeout=timeout)

    def up_flink(self) -> None:
        """Start the Flink session cluster unless its JobManager runs (TaskManagers missing
        from a running one are started too, as ``flink up`` does); nothing for ``--flink
        local``. Jobs already running there hold slots the demo's job may wait for: said."""
        if self.flink is None:
            return
        self.started_flink = self.flink.jobmanager_pid() is None
        self.flink.up(timeout_s=CLUSTER_TIMEOUT_S)
        self._progress(
            f"Flink cluster: {self.flink.rest_url} (web UI), logs {self.flink.layout.log_dir}"
        )
        if not self.started_flink:
            self._say_running_jobs(self.flink)

    def _say_running_jobs(self, flink: LocalFlinkCluster) -> None:
        from streamfolio.flink.cluster import RestError

        try:
            running = [j for j in flink.rest.jobs() if j.state in ("RUNNING", "RESTARTING")]
        except RestError:
            return
        if running:
            ids = ", ".join(j.id for j in running)
            self._progress(
                f"note: the Flink cluster already runs job(s) {ids}, which hold task slots the "
                "demo's job may wait for (`streamfolio job stop ID`)"
            )

    def down(self) -> None:
        """Stop what the demo started: the Flink cluster first (its job's clients would only
        wait for the brokers), then Kafka."""
        if self.flink is not None and self.started_flink:
            self.flink.down()
        if self.started_kafka:
            self.kafka.down()
