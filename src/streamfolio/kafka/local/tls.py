"""Certificates for a secured local cluster: a private CA and one key and certificate per node.

:func:`ensure_certificates` writes them at the first ``kafka up`` into ``<data_dir>/tls/`` with
the ``cryptography`` package, and keeps them afterwards (clients keep trusting ``ca.pem``):

* ``ca.pem`` (the CA certificate clients trust: ``kafka.security.ca_file``) and ``ca.key``;
* ``node-<i>.pem``: node ``i``'s PKCS#8 private key followed by its certificate and the CA's, the
  PEM keystore the broker reads (``ssl.keystore.type=PEM``).

Every node certificate has the subject ``CN=broker`` (:data:`BROKER_CN`), which the brokers map
to the principal ``User:broker``, a super user: nodes authenticate to each other with these
certificates (mutual TLS) on the inter-broker and controller listeners, where SCRAM cannot be
used. Names ``localhost``, ``127.0.0.1`` and ``::1`` are in every certificate, so clients that
check host names (librdkafka and Java both do by default) accept any node. Private keys are
written with mode 0600. EC P-256 keys: quick to make, and both TLS stacks read them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from streamfolio.kafka.local.install import LocalKafkaError

__all__ = [
    "BROKER_CN",
    "HOSTS",
    "TlsFiles",
    "copy_ca",
    "ensure_certificates",
    "node_certificate",
    "write_private",
]

BROKER_CN = "broker"
"""The common name of every node certificate, and so the brokers' principal ``User:broker``."""
HOSTS = ("localhost", "127.0.0.1", "::1")
"""The names every node certificate is valid for (subject alternative names)."""
CA_CN = "streamfolio local Kafka CA"
CA_DAYS = 3650
NODE_DAYS = 825
RENEW_BEFORE = dt.timedelta(days=30)
"""A node certificate this close to its end is made again at the next ``up``."""


@dataclass(frozen=True)
class TlsFiles:
    """Where the certificates of a cluster live: ``folder`` (``<data_dir>/tls``)."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM): what brokers and clients trust."""
        return self.folder / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        """The CA's private key, kept to sign certificates for nodes added later."""
        return self.folder / "ca.key"

    def keystore(self, node: int) -> Path:
        """Node ``node``'s PEM keystore: its private key, its certificate, the CA's."""
        return self.folder / f"node-{node}.pem"


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (mode 0600), atomically: a reader
    never sees a half-written file, and the file is never readable by others, not even briefly.
    """
    scratch = path.with_name(f".{path.name}.partial")
    scratch.unlink(missing_ok=True)
    descriptor = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    scratch.replace(path)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    # PKCS#8, unencrypted: the form Kafka's PEM keystore reads without ssl.key.password.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _new_ca(now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(CA_CN)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def node_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    *,
    now: dt.datetime | None = None,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new key and a certificate for a node, signed by ``ca``: subject ``CN=broker``, valid
    for :data:`HOSTS`, as a server (its listeners) and as a client (to the other nodes)."""
    now = now or dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in HOSTS:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(BROKER_CN))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _load_ca(files: TlsFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None:
    if not (files.ca_file.is_file() and files.ca_key_file.is_file()):
        return None
    key = serialization.load_pem_private_key(files.ca_key_file.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    return key, x509.load_pem_x509_certificate(files.ca_file.read_bytes())


def _current(keystore: Path, ca: x509.Certificate, now: dt.datetime) -> bool:
    """True if ``keystore`` holds a certificate from ``ca`` that is not about to expire."""
    if not keystore.is_file():
        return False
    try:
        leaf = x509.load_pem_x509_certificates(keystore.read_bytes())[0]
        # Every CA made here has the same name: the signature tells them apart.
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError, IndexError, InvalidSignature):
        return False
    return leaf.not_valid_after_utc - RENEW_BEFORE > now


def ensure_certificates(folder: Path, nodes: int) -> TlsFiles:
    """The CA and the keystores of nodes ``0 .. nodes-1`` in ``folder``, made where missing.

    The CA is made once and kept; a node's keystore is made again if it is missing, was signed
    by another CA or expires within :data:`RENEW_BEFORE`. Returns where the files are.
    """
    files = TlsFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    now = dt.datetime.now(dt.UTC)
    loaded = _load_ca(files)
    if loaded is None:
        ca_key, ca = _new_ca(now)
        write_private(files.ca_key_file, _pem_key(ca_key))
        files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    else:
        ca_key, ca = loaded
    for node in range(nodes):
        keystore = files.keystore(node)
        if _current(keystore, ca, now):
            continue
        key, certificate = node_certificate(ca_key, ca, now=now)
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (certificate, ca))
        write_private(keystore, _pem_key(key) + chain)
    return files


def copy_ca(files: TlsFiles, wanted: Path) -> None:
    """Put the cluster's CA certificate at ``wanted`` (``kafka.security.ca_file``) too, unless
    it is there already; refuse another CA there, which clients would trust instead."""
    if wanted == files.ca_file:
        return
    ours = files.ca_file.read_bytes()
    if not wanted.exists():
        wanted.parent.mkdir(parents=True, exist_ok=True)
        wanted.write_bytes(ours)
    elif wanted.read_bytes() != ours:
        raise LocalKafkaError(
            f"kafka.security.ca_file {wanted} is not this cluster's CA ({files.ca_file}); "
            "point it there, or delete it to have it copied"
        )
