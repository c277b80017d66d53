"""The demo empties its topics only on the local broker or cluster: :func:`check_local_cluster`
refuses any other cluster (naming the key, its value and the fix) before :func:`reset_topics`
deletes anything. Both work as the ``admin`` principal (``kafka.security``), the only one a
secured local cluster lets delete and create topics."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from streamfolio.config import Settings
from streamfolio.errors import ConfigError

if TYPE_CHECKING:
    from streamfolio.demo.supervision import Progress


class LocalBrokers(Protocol):
    """What the check needs of the local broker (``LocalKafka``) or cluster (``LocalCluster``):
    where its storage is, and where its clients reach it (every node, comma-separated)."""

    @property
    def data_dir(self) -> Path: ...

    @property
    def bootstrap(self) -> str: ...


def _meta_cluster_id(meta: Path) -> str | None:
    """The ``cluster.id`` of a KRaft ``meta.properties`` file, or None."""
    with contextlib.suppress(OSError):
        for line in meta.read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "cluster.id" and value.strip():
                return value.strip()
    return None


def local_cluster_id(data_dir: Path) -> str | None:
    """The cluster id of the KRaft storage in ``data_dir``, or None if it holds none.

    Where the storage says it: ``kraft/meta.properties`` for the single broker,
    ``node-<i>/kraft/meta.properties`` for a local cluster (the lowest node formatted; every
    node is formatted with the same id), else the ``cluster.id`` file both format it with.

    >>> local_cluster_id(Path("/nonexistent")) is None
    True
    """
    metas = [data_dir / "kraft" / "meta.properties"]
    nodes = [n for n in data_dir.glob("node-*") if n.name.removeprefix("node-").isdigit()]
    metas += [n / "kraft" / "meta.properties" for n in sorted(nodes, key=_node_index)]
    for meta in metas:
        found = _meta_cluster_id(meta)
        if found is not None:
            return found
    with contextlib.suppress(OSError):
        return (data_dir / "cluster.id").read_text(encoding="utf-8").strip() or None
    return None


def _node_index(folder: Path) -> int:
    """``node-12`` -> 12 (so node-10 comes after node-9)."""
    return int(folder.name.removeprefix("node-"))


def cluster_id(settings: Settings, timeout: float = 10.0) -> str | None:
    """The id the cluster at ``kafka.bootstrap_servers`` reports (``describe_cluster``)."""
    from streamfolio.kafka.admin import admin_client

    admin = admin_client(
        settings.kafka.bootstrap_servers, settings.kafka.client_config("admin"), quiet=True
    )
    described = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 5)
    found = getattr(described, "cluster_id", None)
    return str(found) if found else None


_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]", "ip6-localhost"})


def _ports(bootstrap: str) -> set[str]:
    """The ports of ``bootstrap``'s servers.

    >>> sorted(_ports("localhost:19092,localhost:19093"))
    ['19092', '19093']
    """
    return {server.strip().rpartition(":")[2] for server in bootstrap.split(",")}


def _is_local_address(bootstrap: str, local: str) -> bool:
    """True if every server of ``bootstrap`` is on this machine, at a port of ``local`` (the
    local broker's or cluster's own servers).

    >>> _is_local_address("localhost:9092, 127.0.0.1:9092", "localhost:9092")
    True
    >>> _is_local_address("localhost:19093", "localhost:19092,localhost:19093")
    True
    >>> _is_local_address("localhost:9092,kafka.example.com:9092", "localhost:9092")
    False
    """
    ports = _ports(local)
    for server in bootstrap.split(","):
        host, _, found = server.strip().rpartition(":")
        if host.lower() not in _LOOPBACK or found not in ports:
            return False
    return True


def check_local_cluster(
    settings: Settings,
    broker: LocalBrokers,
    describe: Callable[[Settings], str | None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Refuse (:class:`~streamfolio.errors.ConfigError`) unless ``kafka.bootstrap_servers`` is
    the local broker or cluster ``broker`` (the one the demo started or found running from its
    data dir).

    The cluster id the servers report (``describe``, default :func:`cluster_id`, asked as the
    ``admin`` principal) must be the one formatted into the data dir, which holds whatever the
    servers are called (``localhost`` or ``127.0.0.1``); when the data dir has none yet, every
    server must be one of ``broker``'s own ports on this machine.
    """
    bootstrap = settings.kafka.bootstrap_servers
    expected = local_cluster_id(broker.data_dir)
    reason = ""
    if expected is None:
        if not _is_local_address(bootstrap, broker.bootstrap):
            reason = f"it is not the local broker's address {broker.bootstrap}"
    else:
        try:
            found = (describe or cluster_id)(settings)
        except Exception as error:  # any failure: not confirmed
            found = None
            reason = f"its cluster id could not be read ({type(error).__name__})"
        if found != expected and not reason:
            reason = (
                f"it is cluster {found or '(unknown)'}, not the local broker's cluster "
                f"{expected} (from {broker.data_dir})"
            )
    if not reason:
        return
    env = os.environ if environ is None else environ
    variable = next((n for n in env if n.upper() == "STREAMFOLIO_KAFKA__BOOTSTRAP_SERVERS"), None)
    origin = f" (set by environment variable {variable})" if variable else ""
    raise ConfigError(
        "kafka.bootstrap_servers",
        f"{bootstrap!r}{origin}: {reason}; the demo only resets topics on the local broker it "
        "started, and deletes nothing elsewhere",
        f"point kafka.bootstrap_servers at the local broker ({broker.bootstrap})"
        + (f", e.g. unset {variable}" if variable else "")
        + ", or pass --keep-topics to run on that cluster without deleting its topics",
    )


def reset_topics(settings: Settings, progress: Progress) -> None:
    """Delete and re-create the configured topics, so a demo never sees an earlier run.

    Only after :func:`check_local_cluster`: this deletes whatever the topics hold.
    """
    from streamfolio.kafka.admin import admin_client, ensure_topics, topic_specs

    specs = topic_specs(settings)
    admin_config = settings.kafka.client_config("admin")
    admin = admin_client(settings.kafka.bootstrap_servers, admin_config)
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [s.name for s in specs if s.name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, operation_timeout=30).values():
            future.result()
        # Deletion is asynchronous on the broker; wait until the names are free again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and set(doomed) & set(
            admin.list_topics(timeout=10).topics
        ):
            time.sleep(0.5)
    ensure_topics(settings.kafka.bootstrap_servers, specs, config=admin_config)
    progress(f"topics ready (fresh): {', '.join(s.name for s in specs)}")
    # What an earlier demo's feed kept unsent belongs to the topics just emptied: published into
    # the fresh ones, its heartbeats would make the new run's first ticks late.
    from streamfolio.feeds.run import feed_spool_path

    spool = feed_spool_path(settings)
    if spool.exists():
        spool.unlink()
        progress(f"removed {spool}: the unsent messages of an earlier demo's feed")
