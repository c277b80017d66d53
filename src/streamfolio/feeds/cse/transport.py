"""The HTTP side of the CSE client: requests, responses, transports, and what a failure means.

A :data:`Transport` performs one GET and follows no redirect; :class:`HttpxTransport` is the one
over ``httpx``, reading at most :data:`~streamfolio.feeds.cse.endpoints.MAX_BODY_BYTES`.
:func:`classify` sorts a transport's exception into a :class:`CseSourceError` kind (or a bug),
:func:`status_problem` words an HTTP status, and :func:`redirect_target` is the redirect policy:
HTTPS on the configured host only. Retries are :class:`~streamfolio.feeds.cse.client.CseClient`'s.
"""

from __future__ import annotations

import errno
import http
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeAlias
from urllib.parse import urlencode, urljoin, urlsplit

import httpx

from streamfolio.feeds.cse.endpoints import MAX_BODY_BYTES
from streamfolio.feeds.cse.errors import CseSourceError, ErrorKind
from streamfolio.feeds.cse.tls import is_certificate_failure

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_NETWORK_ERRNOS: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One GET: ``url`` without its query, ``params``, ``headers`` and a timeout in seconds."""

    url: str
    params: Mapping[str, str]
    headers: Mapping[str, str]
    timeout_s: float

    @property
    def full_url(self) -> str:
        """The URL with its query string, for messages.

        >>> HttpRequest("https://x/a", {"b": "1", "c[0]": "2"}, {}, 1.0).full_url
        'https://x/a?b=1&c%5B0%5D=2'
        """
        return f"{self.url}?{urlencode(dict(self.params))}" if self.params else self.url


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response: status code, raw body, headers (looked up case-insensitively)."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        """The value of header ``name``, any case.

        >>> HttpResponse(200, b"", {"Content-Type": "text/html"}).header("content-type")
        'text/html'
        """
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def text(self) -> str:
        """The body decoded as UTF-8 (the site's encoding); bad bytes become U+FFFD."""
        return self.body.decode("utf-8", errors="replace")


Transport: TypeAlias = Callable[[HttpRequest], HttpResponse]
"""Performs one request. It raises on network failure (timeouts, refused connections, TLS), and
returns any HTTP status without following redirects; :class:`CseClient` decides what a status
means and which redirect to follow. It may raise :class:`CseSourceError` itself (a body over
:data:`MAX_BODY_BYTES`)."""


class HttpxTransport:
    """A :data:`Transport` over an ``httpx.Client`` (which the caller owns and closes).

    It never lets httpx follow a redirect, whatever the client's setting (:class:`CseClient`
    checks where a redirect goes), and streams the body, stopping at ``max_body_bytes``: an
    endless or huge answer costs that much memory at most, not all of it.
    """

    def __init__(self, client: httpx.Client, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.client = client
        self.max_body_bytes = max_body_bytes

    def __call__(self, request: HttpRequest) -> HttpResponse:
        url = request.full_url
        too_big = CseSourceError(
            url, f"answer larger than {self.max_body_bytes} bytes", kind="payload"
        )
        with self.client.stream(
            "GET",
            request.url,
            # None, not {}: an empty mapping would drop the query of a redirect's URL.
            params=dict(request.params) or None,
            headers=dict(request.headers),
            timeout=request.timeout_s,
            follow_redirects=False,
        ) as response:
            declared = response.headers.get("Content-Length", "").strip()
            # Said so up front: read none of it (a length of 19+ digits is over any cap).
            if (
                declared.isascii()
                and declared.isdigit()
                and (len(declared) > 18 or int(declared) > self.max_body_bytes)
            ):
                raise too_big
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise too_big
                    chunks.append(chunk)
            except httpx.DecodingError as exc:  # a Content-Encoding the body does not follow
                raise CseSourceError(
                    url, f"the body does not decode ({exc})", kind="payload"
                ) from exc
            return HttpResponse(response.status_code, b"".join(chunks), dict(response.headers))


def classify(exc: BaseException) -> ErrorKind | None:
    """What a transport exception means, or None for an exception that is a bug, not a failure."""
    if is_certificate_failure(exc):
        return "tls"
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    if isinstance(
        exc,
        httpx.TransportError | ConnectionError | ssl.SSLError | socket.gaierror | socket.herror,
    ):
        return "connection"
    # Only the network's OSErrors: a FileNotFoundError from a test transport is a bug to show.
    if isinstance(exc, OSError) and exc.errno in _NETWORK_ERRNOS:
        return "connection"
    return None


def status_problem(response: HttpResponse) -> str:
    """An HTTP status for a message: code, phrase, and the start of the body."""
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "unknown status"
    snippet = " ".join(response.body[:800].decode("utf-8", "replace")[:200].split())
    return f"HTTP {response.status} {phrase}" + (f" ({snippet})" if snippet else "")


def redirect_target(base_url: str, current: str, location: str, status: int, url: str) -> str:
    """The absolute URL a redirect from ``current`` leads to, if it stays on HTTPS and the host
    of ``base_url``; else a permanent ``http`` :class:`CseSourceError` (``url`` names the
    request in it)."""
    base = urlsplit(base_url)
    problem = None
    try:
        target = urljoin(current, location.strip())
        parts = urlsplit(target)
        schemes = {"https", base.scheme}  # plain HTTP only if base_url is (a test server)
        if parts.scheme not in schemes:
            problem = f"it leaves HTTPS for {parts.scheme or 'no scheme'}"
        elif (parts.hostname or "").lower() != (base.hostname or "").lower() or (
            _port(parts.scheme, parts.port) != _port(base.scheme, base.port)
        ):
            problem = f"it leads to another host than the configured {base.netloc}"
    except ValueError as exc:  # an unparsable Location (a bad port, a broken IPv6 address)
        target, problem = location, f"it is not a valid URL ({exc})"
    if problem is None:
        return target
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "redirect"
    raise CseSourceError(
        url,
        f"HTTP {status} {phrase} to {location[:300]!r} refused: {problem}",
        kind="http",
        status=status,
    )


def _port(scheme: str, port: int | None) -> int | None:
    return port if port is not None else {"https": 443, "http": 80}.get(scheme)
