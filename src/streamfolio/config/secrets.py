"""Secrets in the settings: :class:`SecretURL` (a notification URL shown masked by
:func:`mask_url` in reprs, dumps and errors) and the reading of ``notify`` entries, including
``env:NAME`` (an environment variable) and ``file:PATH`` references (relative to the
configuration file's folder). ``kafka.security`` values are pydantic ``SecretStr`` (sections.py).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from streamfolio.config.base import invalid

# Schemes whose URLs name a real host (not a token in the host's place, as slack://TokenA/...):
# masked, they keep it.
_HOST_SCHEMES = frozenset(
    {"http", "https", "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos"}
)
_HOSTNAME = re.compile(r"[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def mask_url(url: str) -> str:
    """``url`` without its secrets: ``scheme://host/***`` for a web or mail URL, ``scheme://***``
    for the others (whose host is often a token), ``***`` when it is no URL.

    >>> mask_url("https://hooks.slack.com/services/T000/B000/XXXX")
    'https://hooks.slack.com/***'
    >>> mask_url("json://user:pass@127.0.0.1:8080/hook?token=XXXX")
    'json://127.0.0.1:8080/***'
    >>> mask_url("tgram://123456:bot-token/42"), mask_url("not a URL")
    ('tgram://***', '***')
    """
    scheme, sep, _rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}", scheme):
        return "***"
    if scheme.lower() not in _HOST_SCHEMES:
        return f"{scheme}://***"
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"{scheme}://***"
    if not host or not _HOSTNAME.fullmatch(host):
        return f"{scheme}://***"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}{f':{port}' if port else ''}/***"


class SecretURL(SecretStr):
    """A URL that may carry credentials: ``get_secret_value()`` reveals it; ``str``, ``repr``
    and JSON dumps show :func:`mask_url`'s form.

    >>> url = SecretURL("https://user:pass@example.com/hook")
    >>> url, str(url)
    (SecretURL('https://example.com/***'), 'https://example.com/***')
    """

    def __init__(self, secret_value: str, reference: str | None = None) -> None:
        super().__init__(secret_value)
        self.reference = reference
        """The ``env:NAME`` or ``file:PATH`` entry it was read from, or None (written as is)."""

    def _display(self) -> str:
        return mask_url(self.get_secret_value())

    def shareable(self) -> str | None:
        """What may be published for this entry where others read it (a portfolio definition):
        its reference, or the URL itself when masking hides nothing; None for a URL with a
        secret in it.

        >>> SecretURL("json://user:pass@localhost/hook").shareable() is None
        True
        >>> SecretURL("tgram://123:token/42", "env:TELEGRAM").shareable()
        'env:TELEGRAM'
        >>> SecretURL("https://example.com/***").shareable()
        'https://example.com/***'
        """
        if self.reference is not None:
            return self.reference
        url = self.get_secret_value()
        return url if mask_url(url) == url else None


def notify_entry(item: Any, i: int, context: Mapping[str, Any]) -> Any:
    """A ``notify`` entry as a :class:`SecretURL`, ``env:``/``file:`` references resolved."""
    if isinstance(item, SecretStr):
        item = item.get_secret_value()
    if not isinstance(item, str):
        return item  # pydantic says what is wrong, without showing it
    subkey = f"[{i}]"
    if item.startswith("env:"):
        name = item[4:].strip()
        if not _ENV_NAME.fullmatch(name):
            raise invalid(
                "env: must be followed by an environment variable name",
                'write "env:SLACK_URL"',
                subkey,
            )
        environ: Mapping[str, str] = context.get("environ", os.environ)
        value = environ.get(name)
        if value is None:
            raise invalid(
                f"environment variable {name} (from env:{name}) is not set",
                f"export {name} with the notification URL, or remove the entry",
                subkey,
            )
        source = f"environment variable {name}"
    elif item.startswith("file:"):
        path = Path(item[5:].strip()).expanduser()
        if not path.is_absolute():
            path = Path(context.get("base_dir") or ".") / path
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unreadable"
            raise invalid(
                f"cannot read {path}: {problem}",
                "create it holding the notification URL alone (relative paths start at the "
                "configuration file's folder), or remove the entry",
                subkey,
            ) from None
        source = f"file {path}"
    else:
        value, source = item, ""
    reference = item.strip() if source else None
    value = value.strip()
    if not value or "\n" in value or "://" not in value or " " in value:
        what = f"{source} does not hold" if source else "this entry is not"
        raise invalid(
            f"{what} a notification URL (one line, scheme://…)",
            'an apprise URL such as mailto://user:pass@example.com, "env:NAME" (an environment '
            'variable holding one) or "file:PATH" (a file holding one)',
            subkey,
        )
    return SecretURL(value, reference)
