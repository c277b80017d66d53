"""The SCRAM users of a secured local cluster: who they are, their passwords, how they get in.

:func:`scram_users` lists one user per principal of ``kafka.security.principals`` plus the
default ``username``, each with its password; a password file that does not exist yet is first
created with a random password (:func:`ensure_password_files`, mode 0600), so a fresh checkout
needs no secret written by hand. The users reach the brokers two ways:

* at storage format time (:func:`format_arguments`): ``kafka-storage format --add-scram``
  records them in the cluster's first metadata, so the admin principal can log in at the very
  first start. The tool gets a salted password (PBKDF2, RFC 5802's ``Hi``), never the password,
  so no password shows in a process list;
* on a cluster that already exists, through the admin API (:func:`upsert_users`), so ``up`` after
  adding a principal or changing a password file brings the brokers up to date.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from streamfolio.config import COMPONENTS, KafkaCredentials, KafkaSecurity
from streamfolio.errors import ConfigError
from streamfolio.kafka.local.install import LocalKafkaError
from streamfolio.kafka.local.tls import write_private

__all__ = [
    "ITERATIONS",
    "ScramUser",
    "ensure_password_files",
    "format_arguments",
    "salted_password",
    "scram_users",
    "upsert_users",
]

ITERATIONS = 4096
"""PBKDF2 iterations of every credential: the minimum Kafka accepts for SCRAM-SHA-256/512."""
_USERNAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}


@dataclass(frozen=True)
class ScramUser:
    """A SCRAM user: its name and password (kept out of reprs)."""

    username: str
    password: str = field(repr=False)


def _declared(security: KafkaSecurity) -> list[tuple[str, KafkaCredentials]]:
    """Every credential the settings declare, with the config key that names it in errors."""
    found = [
        (f"kafka.security.principals.{component}", security.principals[component])
        for component in COMPONENTS
        if component in security.principals
    ]
    if security.username is not None:
        default = KafkaCredentials(
            username=security.username,
            password=security.password,
            password_file=security.password_file,
        )
        found.append(("kafka.security", default))
    return found


def ensure_password_files(security: KafkaSecurity) -> list[str]:
    """Create every password file of ``security`` that does not exist, with a random password
    (mode 0600); return the keys of those created (e.g. ``kafka.security.principals.feed``)."""
    created = []
    for key, credentials in _declared(security):
        path = credentials.password_file
        if credentials.password is not None or path is None or path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        write_private(path, (secrets.token_urlsafe(24) + "\n").encode("ascii"))
        created.append(key)
    return created


def scram_users(security: KafkaSecurity) -> list[ScramUser]:
    """The users ``security`` declares, by name, with their passwords (files are read now).

    A username may serve several components (one principal, several roles) if its passwords
    agree. Raises :class:`~streamfolio.errors.ConfigError` for a name SCRAM would have to
    escape or for one name with two passwords, and if a password file cannot be read.
    """
    users: dict[str, ScramUser] = {}
    for key, credentials in _declared(security):
        username, password = credentials.reveal(key)
        if not _USERNAME.fullmatch(username):
            raise ConfigError(
                f"{key}.username",
                f"{username!r} is not a username the local cluster can create",
                "use up to 64 letters, digits, '.', '_' or '-'",
            )
        known = users.get(username)
        if known is not None and known.password != password:
            raise ConfigError(
                f"{key}.username",
                f"user {username!r} is declared twice with different passwords",
                "give both entries the same password_file, or different usernames",
            )
        users[username] = ScramUser(username, password)
    return sorted(users.values(), key=lambda u: u.username)


def salted_password(password: str, salt: bytes, mechanism: str, iterations: int) -> bytes:
    """SCRAM's ``SaltedPassword`` (RFC 5802): PBKDF2 with the mechanism's hash.

    >>> salted_password("pencil", b"salt", "SCRAM-SHA-256", 4096).hex()[:16]
    '0997564f29292327'
    """
    return hashlib.pbkdf2_hmac(_HASHES[mechanism], password.encode("utf-8"), salt, iterations)


def format_arguments(
    users: Sequence[ScramUser], mechanism: str, *, iterations: int = ITERATIONS
) -> list[str]:
    """The ``--add-scram`` arguments of ``kafka-storage format`` that create ``users``: salt and
    salted password, never the password itself.

    >>> args = format_arguments([ScramUser("feed", "pw")], "SCRAM-SHA-512")
    >>> args[0], args[1].startswith('SCRAM-SHA-512=[name="feed",iterations=4096,salt="')
    ('--add-scram', True)
    """
    if mechanism not in _HASHES:
        raise LocalKafkaError(
            f"the local cluster creates SCRAM users, not {mechanism} ones; set "
            "kafka.security.sasl_mechanism to SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    arguments = []
    for user in users:
        salt = secrets.token_bytes(16)
        salted = salted_password(user.password, salt, mechanism, iterations)
        encoded_salt = base64.b64encode(salt).decode("ascii")
        encoded = base64.b64encode(salted).decode("ascii")
        arguments += [
            "--add-scram",
            f'{mechanism}=[name="{user.username}",iterations={iterations},'
            f'salt="{encoded_salt}",saltedpassword="{encoded}"]',
        ]
    return arguments


def upsert_users(
    admin: AdminClient, users: Sequence[ScramUser], mechanism: str, *, timeout: float
) -> None:
    """Create or update ``users``' credentials for ``mechanism`` through the admin API (as a
    super user). Idempotent: the stored credential then matches the password, whatever it was."""
    if not users:
        return
    info = ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), ITERATIONS)
    alterations: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(u.username, info, u.password.encode("utf-8")) for u in users
    ]
    futures = admin.alter_user_scram_credentials(alterations, request_timeout=timeout)
    for username, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise LocalKafkaError(
                f"cannot set the SCRAM credential of user {username!r}: {exc}"
            ) from None
