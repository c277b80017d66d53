"""A local cluster's nodes: ports, server.properties for node i, and when `kafka up` wants one.
No JVM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamfolio.config import KafkaSettings, settings_from_mapping
from streamfolio.kafka.local.cluster import LocalCluster, wants_cluster
from streamfolio.kafka.local.install import LocalKafkaError
from streamfolio.kafka.local.nodes import node_properties, nodes_of
from streamfolio.kafka.local.tls import TlsFiles

LOCAL = {"port": 19092, "internal_port": 19192, "controller_port": 19292}
PORTFOLIOS = [{"id": "p", "tickers": ["ATW", "BCP"]}]


def _kafka(brokers: int = 3, **security: Any) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {"local": {**LOCAL, "brokers": brokers}, "security": security or {}}
    )


def _secured(tmp_path: Path, brokers: int = 3) -> KafkaSettings:
    return _kafka(
        brokers,
        protocol="SASL_SSL",
        principals={"admin": {"username": "boss", "password_file": str(tmp_path / "admin")}},
    )


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return dict(pairs)


def test_node_i_listens_on_its_own_ports_and_folder() -> None:
    nodes = nodes_of(_kafka(), Path("/data"), 3)
    assert [(n.client_port, n.internal_port, n.controller_port) for n in nodes] == [
        (19092, 19192, 19292),
        (19093, 19193, 19293),
        (19094, 19194, 19294),
    ]
    assert [n.folder for n in nodes] == [Path(f"/data/node-{i}") for i in range(3)]
    assert nodes[2].bootstrap == "localhost:19094"
    assert nodes[1].log_dirs == Path("/data/node-1/kraft")


def test_plaintext_properties_of_node_1_of_3() -> None:
    kafka = _kafka()
    nodes = nodes_of(kafka, Path("/data"), 3)
    props = _properties(node_properties(kafka, nodes[1], nodes, tls=None))
    assert props["node.id"] == "1"
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == (
        "0@localhost:19292,1@localhost:19293,2@localhost:19294"
    )
    assert props["listeners"] == (
        "CLIENT://localhost:19093,INTERNAL://localhost:19193,CONTROLLER://localhost:19293"
    )
    assert props["inter.broker.listener.name"] == "INTERNAL"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["listener.security.protocol.map"] == (
        "CLIENT:PLAINTEXT,INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
    )
    assert props["log.dirs"] == "/data/node-1/kraft"
    assert props["min.insync.replicas"] == "2"
    assert props["default.replication.factor"] == "3"
    assert props["offsets.topic.replication.factor"] == "3"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["transaction.state.log.min.isr"] == "2"
    assert props["auto.create.topics.enable"] == "false"
    assert "authorizer.class.name" not in props
    assert not any(key.startswith("ssl.") for key in props)


@pytest.mark.parametrize(
    ("count", "replicas", "min_isr", "internal_min_isr"),
    [(1, "1", "1", "1"), (2, "2", "1", "2"), (3, "3", "2", "2"), (5, "3", "2", "2")],
)
def test_replication_follows_the_node_count(
    count: int, replicas: str, min_isr: str, internal_min_isr: str
) -> None:
    kafka = _kafka(count)
    nodes = nodes_of(kafka, Path("/d"), count)
    props = _properties(node_properties(kafka, nodes[0], nodes, tls=None))
    assert props["offsets.topic.replication.factor"] == replicas
    assert props["share.coordinator.state.topic.replication.factor"] == replicas
    assert props["min.insync.replicas"] == min_isr
    assert props["transaction.state.log.min.isr"] == internal_min_isr
    assert props["controller.quorum.voters"].count("@") == count


def test_secured_properties_sasl_for_clients_mutual_tls_between_nodes(tmp_path: Path) -> None:
    kafka = _secured(tmp_path)
    nodes = nodes_of(kafka, Path("/data"), 3)
    tls = TlsFiles(Path("/data/tls"))
    props = _properties(node_properties(kafka, nodes[2], nodes, tls=tls, super_users=("boss",)))
    assert props["listener.security.protocol.map"] == "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SSL"
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert (
        "ScramLoginModule required" in props["listener.name.client.scram-sha-512.sasl.jaas.config"]
    )
    # SCRAM cannot authenticate the controller listener: certificates do, both ways.
    assert props["listener.name.internal.ssl.client.auth"] == "required"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.location"] == "/data/tls/node-2.pem"
    assert props["ssl.truststore.location"] == "/data/tls/ca.pem"
    assert props["ssl.principal.mapping.rules"].startswith("RULE:^CN=([^,]+)")
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:broker;User:boss"


def test_client_certificates_alone_are_not_offered(tmp_path: Path) -> None:
    kafka = _kafka(3, protocol="SSL")
    nodes = nodes_of(kafka, tmp_path, 3)
    with pytest.raises(LocalKafkaError, match="not SSL"):
        node_properties(kafka, nodes[0], nodes, tls=TlsFiles(tmp_path))


def test_kafka_up_wants_a_cluster_for_several_brokers_or_security(tmp_path: Path) -> None:
    assert wants_cluster(_kafka(1), tmp_path) is None  # the single development broker
    assert wants_cluster(_kafka(1), tmp_path, brokers=1) is None
    assert wants_cluster(_kafka(3), tmp_path) == 3
    assert wants_cluster(_kafka(1), tmp_path, brokers=3) == 3
    assert wants_cluster(_secured(tmp_path, 1), tmp_path) == 1
    # A data dir that holds a cluster (`up --brokers 3` earlier) is stopped as one.
    (tmp_path / "cluster.json").write_text(json.dumps({"nodes": 3}))
    assert wants_cluster(_kafka(1), tmp_path) == 3


def test_brokers_override_revalidates_the_port_ranges(tmp_path: Path) -> None:
    settings = settings_from_mapping(
        {
            "kafka": {"local": {"data_dir": str(tmp_path)}},  # 9092, 9093, 9094: one apart
            "portfolios": PORTFOLIOS,
        }
    )
    with pytest.raises(LocalKafkaError, match="--brokers 3"):
        LocalCluster(settings, tmp_path, brokers=3)


def test_a_cluster_keeps_its_size(tmp_path: Path) -> None:
    data = {"kafka": {"local": {**LOCAL, "data_dir": str(tmp_path)}}, "portfolios": PORTFOLIOS}
    settings = settings_from_mapping(data)
    LocalCluster(settings, tmp_path, brokers=3)._check_shape()
    assert json.loads((tmp_path / "cluster.json").read_text()) == {"nodes": 3}
    with pytest.raises(LocalKafkaError, match="holds a cluster of 3 node"):
        LocalCluster(settings, tmp_path, brokers=2)._check_shape()


def test_status_of_a_stopped_cluster_needs_no_broker(tmp_path: Path) -> None:
    data = {"kafka": {"local": {**LOCAL, "data_dir": str(tmp_path)}}, "portfolios": PORTFOLIOS}
    cluster = LocalCluster(settings_from_mapping(data), tmp_path, brokers=2)
    status = cluster.status()
    assert not status.running and status.partitions == () and status.error is None
    assert [n.to_dict()["running"] for n in status.nodes] == [False, False]
    assert status.to_dict()["bootstrap"] == "localhost:19092,localhost:19093"
    assert cluster.down() is False
