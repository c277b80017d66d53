"""deploy/kubernetes stays valid although nothing here can run it: every file parses and passes
yamllint, every resource passes its published schema (Kubernetes' own kinds with
kubernetes-validate, the custom resources with their CRDs: crd_schemas.py), and the pieces agree
with each other and with the code: the configuration loads, every topic has a KafkaTopic, every
ACL names a topic that exists, and each KafkaUser may do what the local secured cluster lets
that component do, no more.
"""

from __future__ import annotations

import re
from typing import Any

import crd_schemas
import jsonschema
import kubernetes_validate
import pytest
import yamllint.config
import yamllint.linter
from deploykit import DEPLOY, Manifest, manifests, of_kind, one, settings

from streamfolio.config import COMPONENTS

KUBERNETES_VERSION = "1.33"
"""The Kubernetes release the core kinds are checked against (kubernetes-validate's schemas)."""
CORE_GROUPS = ("v1", "apps/v1", "batch/v1")
CUSTOM_KINDS = {"FlinkDeployment", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser"}
YAMLLINT = """
extends: default
rules:
  line-length: {max: 100}
  document-start: disable
  comments: {min-spaces-from-content: 1}
"""
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")


def test_every_document_is_a_named_resource() -> None:
    assert manifests(), "no YAML under deploy/"
    for m in manifests():
        assert {"apiVersion", "kind", "metadata"} <= m.doc.keys(), str(m)
        assert _DNS_NAME.fullmatch(m.name) and len(m.name) <= 63, f"{m}: not a DNS-1123 name"
        assert m.doc["apiVersion"] in CORE_GROUPS or m.kind in CUSTOM_KINDS, str(m)


def test_yamllint_finds_nothing() -> None:
    config = yamllint.config.YamlLintConfig(YAMLLINT)
    files = sorted({m.path for m in manifests()})
    problems = [
        f"{path.relative_to(DEPLOY)}:{p.line}: {p.message}"
        for path in files
        for p in yamllint.linter.run(path.read_text(encoding="utf-8"), config)
    ]
    assert problems == []


# ------------------------------------------------------------------------------------ schemas


@pytest.mark.parametrize(
    "manifest", [m for m in manifests() if m.doc["apiVersion"] in CORE_GROUPS], ids=str
)
def test_core_resources_match_the_kubernetes_schema(manifest: Manifest) -> None:
    kubernetes_validate.validate(manifest.doc, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_schema_refuses_an_unknown_field() -> None:
    deployment = one("Deployment", "streamfolio-feed").doc
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module")
def crd_validators() -> dict[tuple[str, str], crd_schemas.Validate]:
    """The CRD schemas of the Flink operator and, with a Java 21+, of Strimzi."""
    import shutil

    if shutil.which("mvn") is None:
        pytest.skip("Maven (mvn) is needed once to fetch the CRD schemas")
    jars = crd_schemas.fetch_jars()
    crds = [crd_schemas.flink_crd(jars)]
    java = crd_schemas.find_java(21)
    if java is not None:
        crds += crd_schemas.strimzi_crds(jars, java)
    return crd_schemas.crd_validators(crds)


@pytest.mark.parametrize("manifest", [m for m in manifests() if m.kind in CUSTOM_KINDS], ids=str)
def test_custom_resources_match_their_crd(
    manifest: Manifest, crd_validators: dict[tuple[str, str], crd_schemas.Validate]
) -> None:
    validate = crd_validators.get((manifest.doc["apiVersion"], manifest.kind))
    if validate is None and manifest.kind != "FlinkDeployment":
        pytest.skip("Strimzi's CRDs are generated with Java 21+, and there is none here")
    assert validate is not None, f"no CRD schema for {manifest}"
    validate(manifest.doc)


def test_the_crd_schemas_refuse_an_unknown_field(
    crd_validators: dict[tuple[str, str], crd_schemas.Validate],
) -> None:
    job = one("FlinkDeployment").doc
    typo = {**job, "spec": {**job["spec"], "upgradMode": "savepoint"}}
    with pytest.raises(jsonschema.ValidationError, match="upgradMode"):
        crd_validators[(job["apiVersion"], "FlinkDeployment")](typo)


# ---------------------------------------------------------------------------- Kafka on Strimzi


def _cluster() -> Manifest:
    return one("Kafka")


def _topics() -> dict[str, dict[str, Any]]:
    """Kafka topic name → KafkaTopic spec."""
    return {t.doc["spec"].get("topicName", t.name): t.doc["spec"] for t in of_kind("KafkaTopic")}


def test_the_configuration_loads() -> None:
    loaded = settings()
    assert loaded.kafka.security.protocol == "SASL_SSL"
    assert set(loaded.kafka.security.principals) == set(COMPONENTS)


def test_every_topic_of_the_configuration_has_a_kafka_topic() -> None:
    loaded = settings()
    assert set(_topics()) == set(loaded.topics.model_dump().values())
    for name, spec in _topics().items():
        assert spec["partitions"] == loaded.kafka.partitions, name
        assert spec["replicas"] == loaded.kafka.replication_factor == 3, name
        assert spec["config"]["min.insync.replicas"] == 2, name
    updated, metrics = loaded.topics.updated_stats, loaded.topics.metrics
    assert _topics()[updated]["partitions"] == _topics()[metrics]["partitions"]


def test_three_brokers_replicate_every_write_to_two_at_least() -> None:
    cluster = _cluster().doc["spec"]["kafka"]
    pools = [p.doc["spec"] for p in of_kind("KafkaNodePool")]
    assert sum(p["replicas"] for p in pools if "broker" in p["roles"]) == 3
    assert sum(p["replicas"] for p in pools if "controller" in p["roles"]) == 3
    assert cluster["config"]["default.replication.factor"] == 3
    assert cluster["config"]["min.insync.replicas"] == 2
    assert cluster["config"]["transaction.state.log.min.isr"] == 2
    assert cluster["authorization"]["type"] == "simple"


def test_clients_reach_the_scram_tls_listener() -> None:
    loaded = settings()
    host, port = loaded.kafka.bootstrap_servers.split(":")
    assert host == f"{_cluster().name}-kafka-bootstrap"
    (listener,) = [
        li for li in _cluster().doc["spec"]["kafka"]["listeners"] if li["port"] == int(port)
    ]
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    assert loaded.kafka.security.sasl_mechanism == "SCRAM-SHA-512"


def test_every_custom_resource_belongs_to_the_cluster() -> None:
    for m in [*of_kind("KafkaNodePool"), *of_kind("KafkaTopic"), *of_kind("KafkaUser")]:
        assert m.doc["metadata"]["labels"]["strimzi.io/cluster"] == _cluster().name, str(m)


def _acls(user: Manifest) -> set[tuple[str, str, bool, str]]:
    """(kind, name, prefixed, operation) of every ACL of a KafkaUser, as the admin API says
    them (TOPIC, GROUP, TRANSACTIONAL_ID; READ, WRITE, DESCRIBE)."""
    kinds = {"topic": "TOPIC", "group": "GROUP", "transactionalId": "TRANSACTIONAL_ID"}
    found = set()
    for acl in user.doc["spec"]["authorization"]["acls"]:
        assert acl.get("type", "allow") == "allow" and acl.get("host", "*") == "*", str(user)
        resource = acl["resource"]
        prefixed = resource.get("patternType", "literal") == "prefix"
        for operation in acl["operations"]:
            found.add((kinds[resource["type"]], resource["name"], prefixed, operation.upper()))
    return found


def test_every_acl_names_an_existing_topic() -> None:
    for user in of_kind("KafkaUser"):
        for kind, name, prefixed, _ in _acls(user):
            if kind == "TOPIC":
                assert not prefixed and name in _topics(), f"{user}: no topic {name}"


def test_every_principal_is_a_kafka_user_with_scram() -> None:
    principals = settings().kafka.security.principals
    users = {u.name: u for u in of_kind("KafkaUser")}
    assert {p.username for p in principals.values()} == set(users)
    for user in users.values():
        assert user.doc["spec"]["authentication"]["type"] == "scram-sha-512"


def test_kafka_users_may_do_what_the_local_cluster_grants_and_no_more() -> None:
    from streamfolio.kafka.local.access import grants

    loaded = settings()
    for component, principal in loaded.kafka.security.principals.items():
        if component == "admin":
            continue  # a super user locally; see the next test
        expected = {
            (g.kind, g.name, g.prefixed, g.operation)
            for g in grants(loaded)
            if g.principal == f"User:{principal.username}"
        }
        assert _acls(one("KafkaUser", principal.username)) == expected, component


def test_the_admin_only_publishes_the_portfolios_and_their_initial_state() -> None:
    loaded = settings()
    admin = one("KafkaUser", loaded.kafka.security.principals["admin"].username)
    control = {loaded.topics.initial_stats, loaded.topics.weights, loaded.topics.portfolios}
    writes = {("TOPIC", topic, False, op) for topic in control for op in ("WRITE", "DESCRIBE")}
    assert _acls(admin) == writes
