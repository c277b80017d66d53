"""What :class:`~streamfolio.kafka.local.cluster.LocalCluster` reports: the result of ``up`` and
the state ``kafka status`` shows (nodes, partitions with their ISR, ACLs per principal)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamfolio.kafka.admin.ensure import EnsureResult
from streamfolio.kafka.admin.report import GroupLag
from streamfolio.kafka.local.cluster_admin import PartitionReplicas

__all__ = ["ClusterStatus", "ClusterUpResult", "NodeState"]


@dataclass(frozen=True)
class ClusterUpResult:
    """What ``up`` did: ``started`` lists the nodes it started (empty: all were running);
    ``acls`` is (created, deleted); ``users`` the SCRAM users it made sure of."""

    bootstrap: str
    pids: dict[int, int]
    started: tuple[int, ...]
    seconds: float
    topics: EnsureResult
    acls: tuple[int, int] = (0, 0)
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeState:
    """One node as found: its process (None: not running), whether its client port accepts
    connections, and whether it is a registered broker in the cluster's metadata."""

    index: int
    listener: str
    pid: int | None
    listening: bool
    registered: bool
    log_file: Path

    @property
    def running(self) -> bool:
        """True if its process runs."""
        return self.pid is not None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "node_id": self.index,
            "listener": self.listener,
            "running": self.running,
            "pid": self.pid,
            "listening": self.listening,
            "registered": self.registered,
            "log_file": str(self.log_file),
        }


@dataclass(frozen=True)
class ClusterStatus:
    """The cluster as ``kafka status`` shows it. ``partitions`` and ``acls`` are empty when no
    node answers; ``error`` then says why (e.g. the admin's login was refused)."""

    bootstrap: str
    data_dir: Path
    secured: bool
    nodes: tuple[NodeState, ...]
    partitions: tuple[PartitionReplicas, ...] = ()
    acls: dict[str, list[str]] | None = None
    error: str | None = None
    groups: tuple[GroupLag, ...] = ()
    """Consumer groups and their lag per partition (empty when no node answers)."""

    @property
    def running(self) -> bool:
        """True if any node runs."""
        return any(n.running for n in self.nodes)

    @property
    def under_replicated(self) -> tuple[PartitionReplicas, ...]:
        """Partitions with a replica out of sync."""
        return tuple(p for p in self.partitions if p.under_replicated)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "bootstrap": self.bootstrap,
            "data_dir": str(self.data_dir),
            "secured": self.secured,
            "running": self.running,
            "nodes": [n.to_dict() for n in self.nodes],
            "partitions": [p.to_dict() for p in self.partitions],
            "under_replicated": len(self.under_replicated),
            "acls": self.acls or {},
            "groups": [g.to_dict() for g in self.groups],
            "error": self.error,
        }
