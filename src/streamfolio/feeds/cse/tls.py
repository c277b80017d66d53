"""TLS to the exchange's website: a verifying context that adds the intermediate it omits.

The server sends its certificate without the intermediate ``Sectigo Public Server Authentication
CA DV R36``; the package ships a copy in ``streamfolio/feeds/certs`` (see the README there) and
:func:`ssl_context` adds it to the system's and certifi's roots. Verification is never turned off.
This module also recognises a certificate failure among the exceptions a transport raises and
words the message that says how to fix it.
"""

from __future__ import annotations

import ssl
from importlib import resources
from pathlib import Path
from typing import Final

from streamfolio.errors import SourceError

INTERMEDIATE_CA_NAME: Final = "Sectigo Public Server Authentication CA DV R36"
"""Common name of the intermediate certificate the exchange's server does not send."""


def intermediate_ca_path() -> Path:
    """The shipped PEM of the intermediate certificate the server omits (see its README).

    >>> intermediate_ca_path().name
    'sectigo-dv-r36.pem'
    """
    pem = resources.files("streamfolio").joinpath("feeds", "certs", "sectigo-dv-r36.pem")
    return Path(str(pem))


def ssl_context(extra_ca: str | Path | None = None) -> ssl.SSLContext:
    """A verifying TLS context: system roots, certifi's roots, and the missing intermediate.

    ``extra_ca`` is a PEM file of further CA certificates, by default :func:`intermediate_ca_path`.
    Verification is always on (``CERT_REQUIRED`` and host-name checks); the extra certificate only
    completes the server's chain, it is never a trust anchor by itself.

    >>> context = ssl_context()
    >>> context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    True
    """
    path = Path(extra_ca) if extra_ca is not None else intermediate_ca_path()
    context = ssl.create_default_context()
    try:
        import certifi
    except ImportError:  # certifi comes with httpx; without it the system store must do
        pass
    else:
        # The system store may be empty (slim containers); certifi's holds the Sectigo roots.
        context.load_verify_locations(cafile=certifi.where())
    try:
        context.load_verify_locations(cafile=str(path))
    except (OSError, ssl.SSLError) as exc:
        raise SourceError(
            f"cannot load the CA certificate file {path}: {exc}. streamfolio ships the "
            f"intermediate '{INTERMEDIATE_CA_NAME}' as {intermediate_ca_path()}; reinstall the "
            "package or pass extra_ca=PATH to a readable PEM file"
        ) from exc
    # Python 3.13 turns partial chains on by default, which would make the intermediate a trust
    # anchor: keep requiring a chain up to a root of the stores.
    context.verify_flags &= ~ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


def _ssl_error_in(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def is_certificate_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it wraps) is a failed certificate verification."""
    error = _ssl_error_in(exc)
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    # httpx re-raises ssl errors as ConnectError; the ssl text survives even if the chain doesn't.
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or (
        error is not None and "CERTIFICATE_VERIFY_FAILED" in str(error)
    )


def tls_problem(exc: BaseException) -> str:
    """The message of a ``tls`` :class:`~streamfolio.feeds.cse.errors.CseSourceError`: what
    failed and how to fix it."""
    cause = _ssl_error_in(exc)
    detail = getattr(cause, "verify_message", None) or str(cause or exc)
    return (
        f"TLS certificate verification failed ({detail}). The exchange's server does not send "
        f"its intermediate certificate '{INTERMEDIATE_CA_NAME}'; CseClient adds the copy shipped "
        f"as {intermediate_ca_path()} when it builds its own HTTP client (a transport you pass in "
        "must use streamfolio.feeds.cse.ssl_context()). If the server's certificate chain "
        "changed, replace that file (see the README next to it) or pass extra_ca=PATH. "
        "Verification is never disabled."
    )
