"""The dashboard's HTTP security layer: nothing in a request is trusted (docs/dashboard.md, "HTTP").

* :class:`HostGuard`, an ASGI middleware, answers only requests whose ``Host`` is allowed
  (:func:`allowed_hosts`: ``localhost``, ``127.0.0.1``, ``[::1]``, the address it listens on and
  any ``--allowed-host``, with any port); any other gets ``421 Misdirected Request``, so a
  DNS-rebinding page cannot read the portfolios through a browser on this machine. It adds
  :data:`SECURITY_HEADERS` to every response: ``X-Content-Type-Options: nosniff``, a
  Content-Security-Policy that allows the page's own scripts and nothing from elsewhere, and no
  framing; no CORS header is ever sent.
* Query parameters are parsed strictly (:func:`query_params`, :func:`whole_number`,
  :func:`text_param`, :data:`CURSOR`): unknown or repeated parameters, numbers that are not ASCII
  digits or out of range, malformed cursors raise :class:`BadRequestError`, which the routes
  (:mod:`streamfolio.dashboard.app`) answer with ``400`` and ``{"error": reason}``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Final

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamfolio.errors import DataError, UsageError

__all__ = [
    "CURSOR",
    "DEFAULT_ALLOWED_HOSTS",
    "MAX_LIMIT",
    "MAX_QUERY",
    "SECURITY_HEADERS",
    "BadRequestError",
    "HostGuard",
    "allowed_hosts",
    "host_name",
    "query_params",
    "quote",
    "text_param",
    "whole_number",
]

DEFAULT_ALLOWED_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
"""Host names every dashboard answers to, whatever the port (``[::1]`` is written ``::1``)."""
_WILDCARD_ADDRESSES: Final = frozenset({"", "0.0.0.0", "::"})  # no browser sends these as Host
MAX_LIMIT: Final = 10_000
"""The largest ``limit`` accepted."""
MAX_QUERY: Final = 200
"""The longest ``q`` and portfolio id accepted, in characters."""
CURSOR: Final = re.compile(r"([0-9A-Za-z]{1,64})-([0-9]{1,18})", re.ASCII)
"""A stream cursor, ``TOKEN-SEQ``: the state's token and a change's sequence number."""
_DIGITS: Final = re.compile(r"[0-9]{1,18}", re.ASCII)
_HOST: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::[0-9]{1,5})?", re.ASCII
)

SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "X-Content-Type-Options": "nosniff",
    # The page loads its own script, style and vendored ECharts; ECharts writes inline styles
    # (its tooltips), hence 'unsafe-inline' for styles only. The favicon is a data: URL.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
"""Sent with every response."""


class BadRequestError(DataError):
    """A request parameter that does not parse; its message is the reason sent with the 400."""


def whole_number(name: str, text: str, *, low: int = 0, high: int = MAX_LIMIT) -> int:
    """``text`` as an integer in ``low..high``: ASCII digits only (no sign, space or exponent).

    >>> whole_number("limit", "42")
    42
    >>> for bad in ("\u0663", "\u00b2", "-1", "1e9", " 1", "99999999999999999999999"):
    ...     try:
    ...         whole_number("limit", bad)
    ...     except BadRequestError as exc:
    ...         print(exc)
    limit must be a whole number of ASCII digits, not '\u0663'
    limit must be a whole number of ASCII digits, not '\xb2'
    limit must be a whole number of ASCII digits, not '-1'
    limit must be a whole number of ASCII digits, not '1e9'
    limit must be a whole number of ASCII digits, not ' 1'
    limit must be a whole number of ASCII digits, not '99999999999999999999999'
    >>> whole_number("limit", "10001")
    Traceback (most recent call last):
    ...
    streamfolio.dashboard.security.BadRequestError: limit must be in 0..10000, not 10001
    """
    if not _DIGITS.fullmatch(text):
        raise BadRequestError(f"{name} must be a whole number of ASCII digits, not {quote(text)}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequestError(f"{name} must be in {low}..{high}, not {value}")
    return value


def quote(text: str) -> str:
    """``text`` quoted for a message, cut to 40 characters (it came from a request)."""
    return repr(text if len(text) <= 40 else text[:40] + "...")


def query_params(request: Request, allowed: Iterable[str]) -> dict[str, str]:
    """The query parameters, each at most once and each one of ``allowed``."""
    names = set(allowed)
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise BadRequestError(f"unknown parameter {quote(name)} (known: {known})")
        if name in params:
            raise BadRequestError(f"parameter {quote(name)} given more than once")
        params[name] = value
    return params


def text_param(name: str, value: str) -> str:
    """``value`` unless it is longer than :data:`MAX_QUERY` characters."""
    if len(value) > MAX_QUERY:
        raise BadRequestError(f"{name} is longer than {MAX_QUERY} characters")
    return value


def host_name(header: str) -> str | None:
    """The host of a ``Host`` header, lower-case, without port or brackets; None if malformed.

    >>> [host_name(h) for h in ("LocalHost:8050", "[::1]:8050", "127.0.0.1", "a b", "x:99999x")]
    ['localhost', '::1', '127.0.0.1', None, None]
    """
    match = _HOST.fullmatch(header.strip())
    if match is None:
        return None
    return (match["v6"] or match["name"]).lower().rstrip(".")


def allowed_hosts(bind_host: str | None = None, extra: Iterable[str] = ()) -> frozenset[str]:
    """The host names a dashboard listening on ``bind_host`` answers to (any port).

    The defaults (:data:`DEFAULT_ALLOWED_HOSTS`), ``bind_host`` unless it is a wildcard address,
    and ``extra`` (names or addresses, with or without port; ``*`` allows any host).

    >>> sorted(allowed_hosts("192.168.1.5", ["Dash.Example:8050", "[fe80::1]"]))
    ['127.0.0.1', '192.168.1.5', '::1', 'dash.example', 'fe80::1', 'localhost']
    >>> sorted(allowed_hosts("0.0.0.0")) == sorted(DEFAULT_ALLOWED_HOSTS)
    True
    """
    hosts = set(DEFAULT_ALLOWED_HOSTS)
    candidates = [e.strip() for e in extra]
    if bind_host is not None and bind_host.strip().strip("[]") not in _WILDCARD_ADDRESSES:
        candidates.append(bind_host.strip())
    for entry in candidates:
        if entry == "*":
            hosts.add("*")
            continue
        # A bare IPv6 address ("::1", "fe80::1") has more than one colon; "name:port" has one.
        bare_v6 = entry.count(":") > 1 and not entry.startswith("[")
        name = host_name(f"[{entry}]" if bare_v6 else entry)
        if name is None:
            raise UsageError(f"not a host name or address: {entry!r}")
        hosts.add(name)
    return frozenset(hosts)


class HostGuard:
    """ASGI middleware: refuses a disallowed ``Host``, adds :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str]) -> None:
        self.app = app
        self.hosts = hosts

    def _refusal(self, scope: Scope) -> str | None:
        values = [v for k, v in scope.get("headers", ()) if k == b"host"]
        if "*" in self.hosts:
            return None
        if len(values) != 1:
            return "the request must carry exactly one Host header"
        header = values[0].decode("latin-1")
        name = host_name(header)
        if name is None or name not in self.hosts:
            return (
                f"host {quote(header)} is not allowed here; start the dashboard with "
                "--allowed-host NAME to serve it under another name"
            )
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None and scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": refusal[:120]})
            return

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        if refusal is not None:
            response = PlainTextResponse(f"421 Misdirected Request: {refusal}\n", 421)
            await response(scope, receive, secured)
            return
        await self.app(scope, receive, secured if scope["type"] == "http" else send)
