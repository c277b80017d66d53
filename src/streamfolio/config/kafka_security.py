"""How streamfolio's Kafka clients authenticate: typed settings written once, turned into the
properties of both client stacks.

The Python components use librdkafka (``sasl.username``, ``ssl.ca.location``…), the streaming
job's sources and sinks use the Java client (a JAAS line, a PEM truststore). People write the
protocol, the SASL mechanism, who they are and which CA to trust once, in :class:`KafkaSecurity`;
:meth:`KafkaSecurity.librdkafka` and :meth:`KafkaSecurity.java` write the two dialects.

Each component can be its own principal (``principals``: the feed may write prices, nothing
else), so every property set is made for a ``component``; one without its own entry uses the
default ``username``. Passwords are secrets: given inline (best from the environment,
``STREAMFOLIO_KAFKA__SECURITY__PASSWORD``) or in a file read when a client is made, so a
password file may appear after the configuration was loaded (``kafka up`` writes the local
cluster's). Relative paths start at the configuration file's folder.

>>> s = KafkaSecurity(protocol="SASL_SSL", username="feed", password="s3cret", ca_file="/ca.pem")
>>> s.librdkafka("feed")["sasl.username"], s.librdkafka("feed")["ssl.ca.location"]
('feed', '/ca.pem')
>>> KafkaSecurity(protocol="SASL_PLAINTEXT", username="feed", password="s3cret").java("feed")[
...     "sasl.jaas.config"]
'org.apache.kafka.common.security.scram.ScramLoginModule required username="feed" \
password="s3cret";'
>>> s
KafkaSecurity(protocol='SASL_SSL', sasl_mechanism='SCRAM-SHA-512', username='feed', \
password=SecretStr('**********'), password_file=None, ca_file=PosixPath('/ca.pem'), \
certificate_file=None, key_file=None, key_password=None, principals={})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final, Literal, get_args

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from streamfolio.config.base import StrictModel, invalid
from streamfolio.errors import ConfigError

__all__ = [
    "COMPONENTS",
    "Component",
    "KafkaCredentials",
    "KafkaSecurity",
    "Protocol",
    "SaslMechanism",
]

Component = Literal["admin", "feed", "job", "rebalancer", "store", "dashboard"]
"""Who a Kafka client works for; ``admin`` is the operator's tools (topics, ``init``, ``topic``)."""
COMPONENTS: Final[tuple[Component, ...]] = get_args(Component)

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

_JAAS_MODULE: Final[dict[str, str]] = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


def _absolute(value: Path | None, info: ValidationInfo) -> Path | None:
    if value is None or value.is_absolute():
        return value
    base = (info.context or {}).get("base_dir")
    return (Path(base) / value if base else value).resolve()


def _jaas_quoted(text: str) -> str:
    r"""``text`` as a JAAS option value: in double quotes, with ``\`` and ``"`` escaped.

    >>> print(_jaas_quoted('pa"ss\\word'))
    "pa\"ss\\word"
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class KafkaCredentials(StrictModel):
    """One SASL principal: a username and its password, inline or in a file."""

    username: str
    password: SecretStr | None = None
    password_file: Path | None = None

    @field_validator("password_file")
    @classmethod
    def _absolute_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _absolute(value, info)

    @model_validator(mode="after")
    def _one_password(self) -> KafkaCredentials:
        if (self.password is None) == (self.password_file is None):
            raise invalid(
                f"principal {self.username!r} needs exactly one of password and password_file",
                "give the password in a file (password_file) or from the environment (password)",
            )
        return self

    def reveal(self, key: str) -> tuple[str, str]:
        """``(username, password)``, reading the password file now (``key`` names it in errors)."""
        if self.password is not None:
            return self.username, self.password.get_secret_value()
        assert self.password_file is not None
        try:
            text = self.password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{key}.password_file",
                f"cannot read {self.password_file}: {exc.strerror or exc}",
                "create it (`streamfolio kafka up` writes the local cluster's) or fix the path",
            ) from None
        password = text.strip("\r\n")
        if not password:
            raise ConfigError(f"{key}.password_file", f"{self.password_file} is empty", "")
        return self.username, password


class KafkaSecurity(StrictModel):
    """The security of every Kafka connection (``kafka.security``); see the module doc."""

    protocol: Protocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    certificate_file: Path | None = None
    key_file: Path | None = None
    key_password: SecretStr | None = None
    principals: dict[Component, KafkaCredentials] = Field(default_factory=dict)

    @field_validator("password_file", "ca_file", "certificate_file", "key_file")
    @classmethod
    def _absolute_files(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return _absolute(value, info)

    @model_validator(mode="before")
    @classmethod
    def _not_raw_properties(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if isinstance(key, str) and "." in key:
                    raise invalid(
                        f"{key!r} is a client property; kafka.security takes typed settings",
                        "write protocol, sasl_mechanism, username, password(_file), ca_file… "
                        "(see examples/cse.yaml), or put raw properties under kafka.librdkafka "
                        "(Python components) and kafka.java (the job)",
                        key,
                    )
        return data

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSecurity:
        if (self.certificate_file is None) != (self.key_file is None):
            raise invalid(
                "certificate_file and key_file go together",
                "give both (a client certificate and its private key) or neither",
            )
        has_password = self.password is not None or self.password_file is not None
        if self.password is not None and self.password_file is not None:
            raise invalid("both password and password_file are set", "keep one of them")
        if has_password != (self.username is not None):
            raise invalid(
                "username and password go together",
                "give a username with its password (or password_file), or neither",
            )
        if self.sasl and self.username is None and not self.principals:
            raise invalid(
                f"protocol {self.protocol} needs credentials",
                "set username and password (or password_file), or principals per component",
            )
        return self

    @property
    def sasl(self) -> bool:
        """Whether connections authenticate with SASL."""
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Whether connections are encrypted with TLS."""
        return self.protocol.endswith("SSL")

    def credentials(self, component: Component) -> tuple[str, str] | None:
        """``(username, password)`` of ``component``'s principal, or ``None`` without SASL."""
        if not self.sasl:
            return None
        principal = self.principals.get(component)
        if principal is not None:
            return principal.reveal(f"kafka.security.principals.{component}")
        if self.username is None:
            raise ConfigError(
                "kafka.security.principals",
                f"no Kafka principal for the {component}",
                f"add kafka.security.principals.{component}, or a default username and password",
            )
        default = KafkaCredentials(
            username=self.username, password=self.password, password_file=self.password_file
        )
        return default.reveal("kafka.security")

    def librdkafka(self, component: Component) -> dict[str, str]:
        """librdkafka properties (the Python components' clients) for ``component``."""
        props: dict[str, str] = {"security.protocol": self.protocol}
        credentials = self.credentials(component)
        if credentials is not None:
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.username"], props["sasl.password"] = credentials
        if self.tls:
            if self.ca_file is not None:
                props["ssl.ca.location"] = str(self.ca_file)
            if self.certificate_file is not None and self.key_file is not None:
                props["ssl.certificate.location"] = str(self.certificate_file)
                props["ssl.key.location"] = str(self.key_file)
                if self.key_password is not None:
                    props["ssl.key.password"] = self.key_password.get_secret_value()
        return props

    def java(self, component: Component) -> dict[str, str]:
        """Java client properties (the job's sources and sinks) for ``component``.

        The CA and the client certificate are PEM files, read here: the Java client takes PEM
        inline (``ssl.truststore.certificates``, ``ssl.keystore.key``), so the files need not
        exist on the cluster's machines. The key must be PKCS#8 (``BEGIN PRIVATE KEY``).
        """
        props: dict[str, str] = {"security.protocol": self.protocol}
        credentials = self.credentials(component)
        if credentials is not None:
            username, password = credentials
            props["sasl.mechanism"] = self.sasl_mechanism
            props["sasl.jaas.config"] = (
                f"{_JAAS_MODULE[self.sasl_mechanism]} required "
                f"username={_jaas_quoted(username)} password={_jaas_quoted(password)};"
            )
        if self.tls:
            if self.ca_file is not None:
                props["ssl.truststore.type"] = "PEM"
                props["ssl.truststore.certificates"] = _pem(self.ca_file, "kafka.security.ca_file")
            if self.certificate_file is not None and self.key_file is not None:
                props["ssl.keystore.type"] = "PEM"
                props["ssl.keystore.certificate.chain"] = _pem(
                    self.certificate_file, "kafka.security.certificate_file"
                )
                props["ssl.keystore.key"] = _pem(self.key_file, "kafka.security.key_file")
                if self.key_password is not None:
                    props["ssl.key.password"] = self.key_password.get_secret_value()
        return props


def _pem(path: Path, key: str) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(key, f"cannot read {path}: {exc}", "point it at a PEM file") from None
