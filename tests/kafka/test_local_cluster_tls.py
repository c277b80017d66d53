"""The local cluster's certificates: a private CA, node keystores valid for localhost, private
keys readable by their owner only, made once. No JVM."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from streamfolio.kafka.local.install import LocalKafkaError
from streamfolio.kafka.local.tls import BROKER_CN, copy_ca, ensure_certificates


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_node_keystores_hold_key_certificate_and_ca(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", 3)
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for node in range(3):
        data = files.keystore(node).read_bytes()
        assert data.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka's PEM reads
        key = serialization.load_pem_private_key(data, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        leaf, chain_ca = x509.load_pem_x509_certificates(data)
        assert chain_ca == ca
        assert leaf.public_key() == key.public_key()
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == BROKER_CN
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName) == ["localhost"]
        assert set(names.get_values_for_type(x509.IPAddress)) == {
            ipaddress.ip_address("127.0.0.1"),
            ipaddress.ip_address("::1"),
        }
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)


def test_a_client_checking_host_names_accepts_every_node(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, 2)
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    now = dt.datetime.now(dt.UTC)
    for node in range(2):
        leaf, _ = x509.load_pem_x509_certificates(files.keystore(node).read_bytes())
        for host in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
            verifier = PolicyBuilder().store(Store([ca])).time(now).build_server_verifier(host)
            verifier.verify(leaf, [])  # raises if the chain or the name does not match


def test_private_keys_are_for_the_owner_only(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", 1)
    assert _mode(files.ca_key_file) == 0o600
    assert _mode(files.keystore(0)) == 0o600
    assert _mode(files.folder) == 0o700
    assert not list(files.folder.glob(".*partial"))


def test_made_once_then_kept_and_extended(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path, 2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ensure_certificates(tmp_path, 3)  # a third node: only its keystore is new
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {k: after[k] for k in before} == before
    assert files.keystore(2).name in after


def test_a_keystore_from_another_ca_is_made_again(tmp_path: Path) -> None:
    ensure_certificates(tmp_path / "a", 1)
    files = ensure_certificates(tmp_path / "b", 1)
    files.keystore(0).write_bytes((tmp_path / "a" / "node-0.pem").read_bytes())
    ensure_certificates(tmp_path / "b", 1)
    leaf, chain_ca = x509.load_pem_x509_certificates(files.keystore(0).read_bytes())
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    assert leaf.issuer == ca.subject and chain_ca == ca


def test_copy_ca_puts_the_ca_where_clients_look_and_refuses_another(tmp_path: Path) -> None:
    files = ensure_certificates(tmp_path / "tls", 1)
    wanted = tmp_path / "conf" / "ca.pem"
    copy_ca(files, wanted)
    assert wanted.read_bytes() == files.ca_file.read_bytes()
    copy_ca(files, wanted)  # the same CA: fine
    wanted.write_text("another CA")
    with pytest.raises(LocalKafkaError, match="is not this cluster's CA"):
        copy_ca(files, wanted)
