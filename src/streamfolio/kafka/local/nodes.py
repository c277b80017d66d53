"""The nodes of a local multi-broker cluster: where each listens and keeps its files, and its
``server.properties`` (:func:`node_properties`).

Node ``i`` (from 0) is a combined KRaft broker and controller with ``node.id`` ``i``, listening
on three ports: ``CLIENT`` (``kafka.local.port + i``) for the components, ``INTERNAL``
(``internal_port + i``) between brokers and ``CONTROLLER`` (``controller_port + i``) for the
quorum, which is static (``controller.quorum.voters`` names all nodes). Its files are in
``<data_dir>/node-<i>/``.

Secured (``kafka.security.protocol`` SASL_SSL or SASL_PLAINTEXT) the client listener takes
SCRAM logins, and the internal and controller listeners take TLS with client certificates
(mutual TLS: SCRAM cannot authenticate the KRaft controller listener): every node presents
``CN=broker`` (:mod:`~streamfolio.kafka.local.tls`), mapped to the super user ``User:broker``.
``StandardAuthorizer`` refuses what no ACL allows. Unsecured, every listener is PLAINTEXT and
there is no authorizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamfolio.config import KafkaSettings
from streamfolio.kafka.local.install import LocalKafkaError
from streamfolio.kafka.local.tls import BROKER_CN, TlsFiles

__all__ = ["HOST", "Node", "node_properties", "nodes_of", "secured"]

HOST = "localhost"
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PRINCIPAL_RULES = "RULE:^CN=([^,]+)(,.*)?$/$1/,DEFAULT"
"""``CN=broker`` (a node's certificate subject) becomes the principal ``User:broker``."""


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its index (= ``node.id``), ports and folder."""

    index: int
    client_port: int
    internal_port: int
    controller_port: int
    folder: Path

    @property
    def bootstrap(self) -> str:
        """``localhost:<client port>``: where clients reach this node alone."""
        return f"{HOST}:{self.client_port}"

    @property
    def properties_file(self) -> Path:
        """Its ``server.properties``, rewritten from the settings at every start."""
        return self.folder / "server.properties"

    @property
    def pid_file(self) -> Path:
        """Holds its process id while it runs."""
        return self.folder / "kafka.pid"

    @property
    def out_file(self) -> Path:
        """The JVM's stdout and stderr."""
        return self.folder / "kafka.out"

    @property
    def log_file(self) -> Path:
        """Its log (warnings and errors, ``tools/kafka/log4j2.properties``)."""
        return self.folder / "broker.log"

    @property
    def log_dirs(self) -> Path:
        """Its ``log.dirs``: partitions and the KRaft metadata log."""
        return self.folder / "kraft"


def nodes_of(settings: KafkaSettings, data_dir: Path, count: int) -> list[Node]:
    """The ``count`` nodes ``settings.local`` describes, their folders under ``data_dir``.

    >>> local = {"port": 19092, "internal_port": 19192, "controller_port": 19292}
    >>> [(n.index, n.client_port, n.internal_port, n.controller_port, n.folder.name)
    ...  for n in nodes_of(KafkaSettings(local=local), Path("/d"), 2)]
    [(0, 19092, 19192, 19292, 'node-0'), (1, 19093, 19193, 19293, 'node-1')]
    """
    local = settings.local
    return [
        Node(
            index=i,
            client_port=local.port + i,
            internal_port=local.internal_port + i,
            controller_port=local.controller_port + i,
            folder=data_dir / f"node-{i}",
        )
        for i in range(count)
    ]


def secured(settings: KafkaSettings) -> bool:
    """True if the cluster authenticates and authorizes (SASL on the client listener).

    Raises :class:`LocalKafkaError` for the protocol the local cluster cannot offer (SSL: every
    component would need a client certificate of its own).
    """
    protocol = settings.security.protocol
    if protocol == "SSL":
        raise LocalKafkaError(
            "the local cluster offers PLAINTEXT, SASL_PLAINTEXT or SASL_SSL to clients, not SSL "
            "(client certificates per component); set kafka.security.protocol to SASL_SSL"
        )
    return protocol != "PLAINTEXT"


def _replicas(count: int) -> dict[str, int]:
    replicas = min(3, count)
    min_isr = min(2, count)
    return {
        "default.replication.factor": replicas,
        # One broker down still accepts acks=all writes, two down refuse them (N >= 3).
        "min.insync.replicas": 2 if count >= 3 else 1,
        "offsets.topic.replication.factor": replicas,
        "transaction.state.log.replication.factor": replicas,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replicas,
        "share.coordinator.state.topic.min.isr": min_isr,
    }


def node_properties(
    settings: KafkaSettings,
    node: Node,
    nodes: list[Node],
    *,
    tls: TlsFiles | None,
    super_users: tuple[str, ...] = (),
) -> str:
    """Node ``node``'s ``server.properties``. ``tls`` is where the certificates are (None for
    an unsecured cluster); ``super_users`` are usernames beside ``broker`` that may do
    anything (the admin principal)."""
    secure = secured(settings)
    if secure and tls is None:
        raise LocalKafkaError("a secured cluster needs its certificates (tls)")
    protocols = (
        {"CLIENT": settings.security.protocol, "INTERNAL": "SSL", "CONTROLLER": "SSL"}
        if secure
        else {"CLIENT": "PLAINTEXT", "INTERNAL": "PLAINTEXT", "CONTROLLER": "PLAINTEXT"}
    )
    voters = ",".join(f"{n.index}@{HOST}:{n.controller_port}" for n in nodes)
    listeners = (
        f"CLIENT://{HOST}:{node.client_port},INTERNAL://{HOST}:{node.internal_port},"
        f"CONTROLLER://{HOST}:{node.controller_port}"
    )
    lines = [
        "# Written by `streamfolio kafka up` from the config; edits are overwritten.",
        "process.roles=broker,controller",
        f"node.id={node.index}",
        # A static quorum of every node: the storage is formatted without --standalone.
        f"controller.quorum.voters={voters}",
        f"listeners={listeners}",
        f"advertised.listeners={listeners}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=INTERNAL",
        "listener.security.protocol.map="
        + ",".join(f"{name}:{protocol}" for name, protocol in protocols.items()),
        f"log.dirs={node.log_dirs}",
        f"num.partitions={settings.partitions}",
        # A typo in a topic name must fail, not create a one-off topic.
        "auto.create.topics.enable=false",
        *(f"{key}={value}" for key, value in _replicas(len(nodes)).items()),
        # Fewer partitions than the default 50 make the first group join quick on 2 cores.
        "offsets.topic.num.partitions=3",
        "transaction.state.log.num.partitions=3",
        # A small machine runs three of these beside a Flink cluster.
        "num.network.threads=2",
        "num.io.threads=2",
        "group.initial.rebalance.delay.ms=0",
        # Exactly-once Flink sinks use transaction.timeout.ms up to 15 min.
        "transaction.max.timeout.ms=900000",
        # Record timestamps are event times, months old in a replay: keep everything.
        "log.retention.ms=-1",
    ]
    if secure:
        assert tls is not None
        mechanism = settings.security.sasl_mechanism
        users = ";".join(f"User:{name}" for name in (BROKER_CN, *super_users))
        lines += [
            f"listener.name.client.sasl.enabled.mechanisms={mechanism}",
            f"listener.name.client.{mechanism.lower()}.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            "listener.name.internal.ssl.client.auth=required",
            "listener.name.controller.ssl.client.auth=required",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={tls.keystore(node.index)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={tls.ca_file}",
            f"ssl.principal.mapping.rules={PRINCIPAL_RULES}",
            f"authorizer.class.name={AUTHORIZER}",
            "allow.everyone.if.no.acl.found=false",
            f"super.users={users}",
        ]
    return "\n".join([*lines, ""])
