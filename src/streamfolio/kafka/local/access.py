"""Who may do what on a secured local cluster: one declarative table, :data:`ACCESS`, turned
into ACL bindings for the component principals.

Each component reads and writes topics by *role* (``topics.<role>`` names them), joins consumer
groups and uses transactional ids; :data:`ACCESS` says which, and :func:`acl_bindings` writes
the ACLs for the principals of ``kafka.security``. Everything else is refused: the brokers run
``StandardAuthorizer`` with ``allow.everyone.if.no.acl.found=false``. The ``admin`` principal
is a super user (topic creation, ``init``, ``topic produce``) and gets no ACLs.

Groups and transactional ids are templates over the settings (``{kafka.client_id}``,
``{rebalancer.group_id}``), the names the components use (grep ``group.id`` and
``transactional.id`` in ``src/``): the job's source ``<client_id>-job`` and sinks
``<client_id>-job-<role>-…`` (Flink appends subtask and checkpoint), the rebalancer's group,
its ``.memory`` follower and its transactional id ``<group_id>.<instance>``, the store's
``streamfolio-store``, and the dashboard's and demo viewer's random groups (prefixes).

Idempotent producers need only WRITE on their topics (Kafka >= 3.0, KIP-679: no
IdempotentWrite on the cluster); READ and WRITE imply DESCRIBE, which is granted explicitly
anyway so that ``kafka status`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from streamfolio.kafka.topics import Role

if TYPE_CHECKING:
    from streamfolio.config import Component, Settings

__all__ = ["ACCESS", "Access", "Grant", "Named", "acl_bindings", "grants"]

Operation = Literal["READ", "WRITE", "DESCRIBE"]
Kind = Literal["TOPIC", "GROUP", "TRANSACTIONAL_ID"]


@dataclass(frozen=True)
class Named:
    """A group or transactional id: a template over the settings, matched exactly or as a
    prefix (for names with a random or per-instance part)."""

    template: str
    prefixed: bool = False

    def name(self, settings: Settings) -> str:
        """The name for ``settings``, e.g. ``streamfolio-job`` for ``{kafka.client_id}-job``."""
        return self.template.format(kafka=settings.kafka, rebalancer=settings.rebalancer)


@dataclass(frozen=True)
class Access:
    """What one component may do: topics it reads (READ, DESCRIBE), writes (WRITE, DESCRIBE)
    or only looks at (DESCRIBE: partitions and offsets), by role; consumer groups it uses
    (READ, DESCRIBE); transactional ids it produces with (WRITE, DESCRIBE)."""

    reads: tuple[Role, ...] = ()
    writes: tuple[Role, ...] = ()
    describes: tuple[Role, ...] = ()
    groups: tuple[Named, ...] = ()
    transactional_ids: tuple[Named, ...] = ()


ACCESS: dict[Component, Access] = {
    # Ticks and heartbeats go to the prices topic; malformed input to dead letters.
    "feed": Access(writes=("prices", "dead_letter")),
    "job": Access(
        reads=("prices", "initial_stats", "weights", "portfolios"),
        writes=("updated_stats", "metrics", "dead_letter"),
        groups=(Named("{kafka.client_id}-job"),),
        # Exactly-once sinks: <prefix>-<role>-<subtask>-<checkpoint>.
        transactional_ids=(Named("{kafka.client_id}-job-", prefixed=True),),
    ),
    "rebalancer": Access(
        # Decisions from metrics and statistics; its memory from weights, events and the
        # initial statistics (rebalancer/follower.py).
        reads=(
            "metrics",
            "updated_stats",
            "rebalance_events",
            "initial_stats",
            "weights",
            "portfolios",
        ),
        writes=("weights", "rebalance_events", "dead_letter"),
        groups=(Named("{rebalancer.group_id}"), Named("{rebalancer.group_id}.memory")),
        transactional_ids=(Named("{rebalancer.group_id}.", prefixed=True),),
    ),
    # The store keeps what it reads and dead-letters what it cannot store: bad input loses
    # nothing. store.service.DEFAULT_GROUP.
    "store": Access(
        reads=("updated_stats", "metrics", "weights", "rebalance_events", "portfolios"),
        writes=("dead_letter",),
        groups=(Named("streamfolio-store"),),
    ),
    # The dashboard (and the demo's live view, with its principal) only reads; the tick rate
    # comes from the prices topic's end offsets, which DESCRIBE allows.
    "dashboard": Access(
        reads=(
            "weights",
            "initial_stats",
            "rebalance_events",
            "metrics",
            "updated_stats",
            "dead_letter",
            "portfolios",
        ),
        describes=("prices",),
        groups=(
            Named("streamfolio-dashboard-", prefixed=True),
            Named("streamfolio-demo-view-", prefixed=True),
        ),
    ),
}
"""The access of every component but ``admin`` (a super user)."""


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: ``principal`` (``User:name``) may ``operation`` on a resource, from any host."""

    principal: str
    kind: Kind
    name: str
    prefixed: bool
    operation: Operation

    def binding(self) -> AclBinding:
        """The ALLOW binding the admin API creates."""
        return AclBinding(
            getattr(ResourceType, self.kind),
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            self.principal,
            "*",
            getattr(AclOperation, self.operation),
            AclPermissionType.ALLOW,
        )

    def describe(self) -> str:
        """One line for people, e.g. ``TOPIC Weights WRITE``; a prefix ends with ``*``.

        >>> Grant("User:job", "GROUP", "streamfolio-job-", True, "READ").describe()
        'GROUP streamfolio-job-* READ'
        """
        return f"{self.kind} {self.name}{'*' if self.prefixed else ''} {self.operation}"


_READ: tuple[Operation, ...] = ("READ", "DESCRIBE")
_WRITE: tuple[Operation, ...] = ("WRITE", "DESCRIBE")
_DESCRIBE: tuple[Operation, ...] = ("DESCRIBE",)


def _component_grants(settings: Settings, principal: str, access: Access) -> set[Grant]:
    topics: list[tuple[tuple[Role, ...], tuple[Operation, ...]]] = [
        (access.reads, _READ),
        (access.writes, _WRITE),
        (access.describes, _DESCRIBE),
    ]
    names: list[tuple[Kind, tuple[Named, ...], tuple[Operation, ...]]] = [
        ("GROUP", access.groups, _READ),
        ("TRANSACTIONAL_ID", access.transactional_ids, _WRITE),
    ]
    found: set[Grant] = set()
    for roles, operations in topics:
        for role in roles:
            topic = getattr(settings.topics, role)
            found |= {Grant(principal, "TOPIC", topic, False, op) for op in operations}
    for kind, named, operations in names:
        for each in named:
            name = each.name(settings)
            found |= {Grant(principal, kind, name, each.prefixed, op) for op in operations}
    return found


def grants(settings: Settings) -> list[Grant]:
    """Every ACL the component principals of ``settings`` need, sorted, without duplicates.

    A component without a principal of its own uses the default ``username``, which then gets
    that component's grants; the admin's principal gets none (it is a super user, and so is
    a component that shares its username).
    """
    security = settings.kafka.security
    if not security.sasl:
        return []
    admin = _username(settings, "admin")
    found: set[Grant] = set()
    for component, access in ACCESS.items():
        username = _username(settings, component)
        if username is not None and username != admin:
            found |= _component_grants(settings, f"User:{username}", access)
    return sorted(found)


def acl_bindings(settings: Settings) -> list[AclBinding]:
    """:func:`grants` as the admin API's ``AclBinding`` objects."""
    return [grant.binding() for grant in grants(settings)]


def _username(settings: Settings, component: Component) -> str | None:
    """The username ``component`` connects as, without reading any password file."""
    security = settings.kafka.security
    principal = security.principals.get(component)
    return principal.username if principal is not None else security.username
