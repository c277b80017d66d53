"""What the tooling asks a running local cluster through the admin API: whether it answers (and
accepts our login), its brokers, its partitions' replicas and ISR, its ACLs.

:func:`connect` turns librdkafka's quiet retries into an answer: a refused SCRAM login is
reported at once as "authentication failed", not as a timeout. :func:`ensure_acls` makes the
ACLs of the managed principals exactly the wanted ones.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ClusterMetadata,
    ResourcePatternType,
    ResourceType,
)

from streamfolio.kafka.local.install import LocalKafkaError

__all__ = [
    "AuthenticationFailedError",
    "PartitionReplicas",
    "acls_by_principal",
    "connect",
    "ensure_acls",
    "replicas",
    "wait_for_full_isr",
]

_AUTH_CODES = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED}


class AuthenticationFailedError(LocalKafkaError):
    """The cluster refused the tooling's login (wrong password, unknown user)."""


@dataclass(frozen=True)
class PartitionReplicas:
    """One partition's leader (-1: none), replicas and in-sync replicas, by node id."""

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]

    @property
    def under_replicated(self) -> bool:
        """True if a replica is out of sync (or the partition has no leader)."""
        return self.leader < 0 or set(self.isr) != set(self.replicas)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view."""
        return {
            "topic": self.topic,
            "partition": self.partition,
            "leader": self.leader,
            "replicas": list(self.replicas),
            "isr": list(self.isr),
            "under_replicated": self.under_replicated,
        }


def _quiet() -> logging.Logger:
    logger = logging.getLogger("streamfolio.kafka.local.quiet")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False
    return logger


def connect(
    bootstrap: str, config: Mapping[str, str], *, timeout: float
) -> tuple[AdminClient, ClusterMetadata]:
    """An admin client of the cluster at ``bootstrap`` and its metadata, once it answers.

    Raises :class:`AuthenticationFailedError` as soon as a broker refuses the login in ``config``
    (librdkafka would otherwise retry until ``timeout``), :class:`LocalKafkaError` if nothing
    answers within ``timeout`` seconds.
    """
    refusals: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _AUTH_CODES:
            refusals.append(error)

    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **config,
        "error_cb": on_error,
        "logger": _quiet(),
    }
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout
    while True:
        try:
            metadata = admin.list_topics(timeout=min(1.0, max(deadline - time.monotonic(), 0.1)))
        except KafkaException as exc:
            admin.poll(0)  # deliver error callbacks
            if refusals:
                user = config.get("sasl.username", "?")
                raise AuthenticationFailedError(
                    f"authentication failed for user {user!r} at {bootstrap}: "
                    f"{refusals[-1].str()}; check the password (file) in kafka.security"
                ) from None
            if time.monotonic() >= deadline:
                raise LocalKafkaError(f"Kafka at {bootstrap} does not answer: {exc}") from None
            continue
        return admin, metadata


def replicas(
    metadata: ClusterMetadata, topics: Iterable[str] | None = None
) -> list[PartitionReplicas]:
    """Every partition of ``topics`` (default: all but Kafka's internal ``__…`` ones), sorted."""
    wanted = set(topics) if topics is not None else None
    found = []
    for name, topic in metadata.topics.items():
        if (wanted is not None and name not in wanted) or (
            wanted is None and name.startswith("__")
        ):
            continue
        for pid, partition in topic.partitions.items():
            found.append(
                PartitionReplicas(
                    name, pid, partition.leader, tuple(partition.replicas), tuple(partition.isrs)
                )
            )
    return sorted(found, key=lambda p: (p.topic, p.partition))


def _all_acls(admin: AdminClient, timeout: float) -> list[AclBinding]:
    # None matches any name, principal and host (the stubs do not say so).
    every = AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    try:
        found = admin.describe_acls(every, request_timeout=timeout).result(timeout=timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"cannot list the ACLs: {exc}") from None
    return list(found)


def acls_by_principal(admin: AdminClient, *, timeout: float) -> dict[str, list[str]]:
    """Every ACL, as lines like ``ALLOW TOPIC Weights (LITERAL) WRITE`` per principal."""
    by_principal: dict[str, list[str]] = {}
    for acl in _all_acls(admin, timeout):
        line = (
            f"{_label(acl.permission_type)} {_label(acl.restype)} {acl.name} "
            f"({_label(acl.resource_pattern_type)}) {_label(acl.operation)}"
        )
        by_principal.setdefault(acl.principal, []).append(line)
    return {principal: sorted(lines) for principal, lines in sorted(by_principal.items())}


def _label(value: object) -> str:
    """An enum member's name (the admin API returns enums where the stubs allow str or int)."""
    return str(getattr(value, "name", value))


def ensure_acls(
    admin: AdminClient,
    wanted: Sequence[AclBinding],
    managed: Iterable[str],
    *,
    timeout: float,
) -> tuple[int, int]:
    """Make the ACLs of the ``managed`` principals exactly ``wanted``: create the missing ones,
    delete the others (left by an older configuration). Returns (created, deleted)."""
    managed = set(managed)
    existing = {a for a in _all_acls(admin, timeout) if a.principal in managed}
    missing = [a for a in wanted if a not in existing]
    stale = [a for a in existing if a not in set(wanted)]
    try:
        if missing:
            for future in admin.create_acls(missing, request_timeout=timeout).values():
                future.result(timeout=timeout)
        if stale:
            filters = [
                AclBindingFilter(
                    a.restype,
                    a.name,
                    a.resource_pattern_type,
                    a.principal,
                    a.host,
                    a.operation,
                    a.permission_type,
                )
                for a in stale
            ]
            for future in admin.delete_acls(filters, request_timeout=timeout).values():
                future.result(timeout=timeout)
    except KafkaException as exc:
        raise LocalKafkaError(f"cannot set the ACLs: {exc}") from None
    return len(missing), len(stale)


def wait_for_full_isr(
    bootstrap: str,
    config: Mapping[str, str],
    *,
    timeout: float,
    topics: Sequence[str] | None = None,
) -> None:
    """Wait until every partition of ``topics`` (default: all but internal ones) has a leader
    and all its replicas in sync; :class:`LocalKafkaError` naming the laggards after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    admin, metadata = connect(bootstrap, config, timeout=timeout)
    while True:
        lagging = [p for p in replicas(metadata, topics) if p.under_replicated]
        if not lagging:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(f"{p.topic}[{p.partition}] isr {list(p.isr)}" for p in lagging[:5])
            raise LocalKafkaError(f"partitions still under-replicated after {timeout:g} s: {names}")
        time.sleep(0.25)
        with contextlib.suppress(KafkaException):  # a node going away: ask again
            metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 1.0))
