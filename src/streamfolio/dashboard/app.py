"""The dashboard's web app: one static page, a JSON snapshot API and a server-sent-events stream.

Routes:

* ``GET /``: the page (``static/index.html``); ``/static/…``: its JS, CSS and vendored ECharts;
* ``GET /api/portfolios?q=&limit=``: one summary line per portfolio, filtered by ``q``;
* ``GET /api/portfolio/{id}``: everything kept for one portfolio, with the cursor (``token`` and
  ``seq``) to stream what comes after it;
* ``GET /api/health``: pipeline health;
* ``GET /api/stream?portfolio=ID&since=TOKEN-SEQ``: server-sent events: ``portfolio`` (the
  selected portfolio's changes since the cursor, at most every ``interval_s``) and ``health``
  (every ``health_every_s``). Only the selected portfolio is pushed, so hundreds of portfolios
  never flood a browser. Event ids are cursors, so a reconnecting ``EventSource`` resumes where
  it stopped (``Last-Event-ID``); a cursor of another server process gets a full ``reset``.

The stream polls the in-memory state rather than being woken by the consumer thread: a version
check under a lock costs next to nothing, and it coalesces a burst of records into one event.

Nothing in a request is trusted (docs/dashboard.md, "HTTP"): every route, streams included,
sits behind the Host allow-list and security headers of :mod:`streamfolio.dashboard.security`,
and its query parameters are parsed strictly there (a bad one gets ``400`` with
``{"error": reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from types import FrameType
from typing import Any, Final, Protocol

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamfolio.dashboard.security import (
    CURSOR,
    DEFAULT_ALLOWED_HOSTS,
    MAX_LIMIT,
    SECURITY_HEADERS,
    BadRequestError,
    HostGuard,
    allowed_hosts,
    host_name,
    query_params,
    quote,
    text_param,
    whole_number,
)
from streamfolio.dashboard.state import DashboardState
from streamfolio.errors import StreamfolioError
from streamfolio.observability.metrics import DASHBOARD_CLIENTS, DASHBOARD_CONNECTIONS

__all__ = [
    "DEFAULT_ALLOWED_HOSTS",
    "MAX_LIMIT",
    "SECURITY_HEADERS",
    "BadRequestError",
    "Lifecycle",
    "allowed_hosts",
    "create_app",
    "event_stream",
    "host_name",
    "parse_cursor",
    "serve",
    "sse",
    "whole_number",
]

_PACKAGE: Final = "streamfolio.dashboard"
_NO_CACHE: Final = {"Cache-Control": "no-cache"}


def _bad(reason: str, status: int = 400) -> Response:
    return JSONResponse({"error": reason}, status, headers=_NO_CACHE)


class Lifecycle(Protocol):
    """What the app starts with itself and stops on shutdown (the consumer thread)."""

    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...


def sse(event: str, data: Mapping[str, Any], event_id: str | None = None) -> str:
    """One server-sent event; ``data`` as one line of JSON.

    >>> print(sse("health", {"ok": True}, "ab-3"), end="")
    event: health
    id: ab-3
    data: {"ok":true}
    <BLANKLINE>
    """
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head + "data: " + json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n\n"


def parse_cursor(cursor: str | None, token: str) -> int:
    """The sequence number in a ``TOKEN-SEQ`` cursor of this state; -1 (send all) otherwise.

    >>> parse_cursor("ab12-42", "ab12"), parse_cursor("zz99-42", "ab12"), parse_cursor(None, "x")
    (42, -1, -1)
    """
    if not cursor:
        return -1
    match = CURSOR.fullmatch(cursor.strip())
    return int(match[2]) if match is not None and match[1] == token else -1


async def event_stream(
    state: DashboardState,
    portfolio_id: str | None,
    since: int,
    *,
    closing: threading.Event,
    interval_s: float = 0.5,
    health_every_s: float = 1.0,
    max_events: int | None = None,
) -> AsyncIterator[str]:
    """The events of one ``/api/stream`` connection, until the server closes (or ``max_events``).

    A ``portfolio`` event carries the delta since the client's cursor; its id is the new cursor.
    """
    sent = 0
    next_health = 0.0
    DASHBOARD_CONNECTIONS.inc()
    DASHBOARD_CLIENTS.inc()
    try:
        yield "retry: 2000\n\n"  # reconnect quickly after a server restart
        while not closing.is_set() and (max_events is None or sent < max_events):
            if portfolio_id is not None:
                delta = state.delta(portfolio_id, since)
                if delta is not None:
                    since = delta["seq"]
                    yield sse("portfolio", delta, f"{delta['token']}-{since}")
                    sent += 1
            if time.monotonic() >= next_health:
                yield sse("health", state.health_report())
                sent += 1
                next_health = time.monotonic() + health_every_s
            await asyncio.sleep(interval_s)
    finally:  # the client went away (cancelled), the server closes, or max_events
        DASHBOARD_CLIENTS.dec()


def _index_html() -> str:
    return resources.files(_PACKAGE).joinpath("static", "index.html").read_text(encoding="utf-8")


@dataclass(frozen=True)
class _Api:
    """The request handlers, over one state."""

    state: DashboardState
    closing: threading.Event
    interval_s: float
    health_every_s: float
    index: str

    async def page(self, _: Request) -> Response:
        return HTMLResponse(self.index, headers=_NO_CACHE)

    async def portfolios(self, request: Request) -> Response:
        try:
            params = query_params(request, ("q", "limit"))
            query = text_param("q", params.get("q", ""))
            limit = params.get("limit")
            count = whole_number("limit", limit) if limit is not None else None
        except BadRequestError as exc:
            return _bad(str(exc))
        lines = self.state.summaries(query, count)
        return JSONResponse({"portfolios": lines, "seq": self.state.seq}, headers=_NO_CACHE)

    async def portfolio(self, request: Request) -> Response:
        try:
            query_params(request, ())
            portfolio_id = text_param("portfolio id", request.path_params["portfolio_id"])
        except BadRequestError as exc:
            return _bad(str(exc))
        snapshot = self.state.snapshot(portfolio_id)
        if snapshot is None:
            return _bad(f"no portfolio {quote(portfolio_id)}", 404)
        return JSONResponse(snapshot, headers=_NO_CACHE)

    async def health(self, request: Request) -> Response:
        try:
            query_params(request, ())
        except BadRequestError as exc:
            return _bad(str(exc))
        return JSONResponse(self.state.health_report(), headers=_NO_CACHE)

    async def stream(self, request: Request) -> Response:
        try:
            params = query_params(request, ("portfolio", "since"))
            portfolio_id = text_param("portfolio", params.get("portfolio", "")) or None
            # An EventSource that reconnects sends the id of the last event it got.
            cursor = request.headers.get("last-event-id") or params.get("since")
            if cursor and not CURSOR.fullmatch(cursor.strip()):
                raise BadRequestError(f"a cursor is TOKEN-SEQ, not {quote(cursor)}")
        except BadRequestError as exc:
            return _bad(str(exc))
        if portfolio_id is not None and not self.state.knows(portfolio_id):
            return _bad(f"no portfolio {quote(portfolio_id)}", 404)
        events = event_stream(
            self.state,
            portfolio_id,
            parse_cursor(cursor, self.state.token),
            closing=self.closing,
            interval_s=self.interval_s,
            health_every_s=self.health_every_s,
        )
        headers = {**_NO_CACHE, "X-Accel-Buffering": "no"}  # no proxy buffering of the stream
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)


def create_app(
    state: DashboardState,
    *,
    consumer: Lifecycle | None = None,
    closing: threading.Event | None = None,
    interval_s: float = 0.5,
    health_every_s: float = 1.0,
    hosts: Iterable[str] | None = None,
) -> Starlette:
    """The ASGI app over ``state``; starts and stops ``consumer`` with itself.

    Setting ``closing`` ends every open event stream, so a server can shut down without waiting
    for browsers to hang up. ``hosts`` are the host names it answers to (see
    :func:`allowed_hosts`; by default :data:`DEFAULT_ALLOWED_HOSTS`).
    """
    allowed = allowed_hosts(None, hosts or ())
    stop = closing if closing is not None else threading.Event()
    api = _Api(state, stop, interval_s, health_every_s, _index_html())

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if consumer is not None:
            consumer.start()
        try:
            yield
        finally:
            stop.set()
            if consumer is not None:
                await asyncio.to_thread(consumer.stop)

    routes = [
        Route("/", api.page),
        Route("/api/portfolios", api.portfolios),
        Route("/api/portfolio/{portfolio_id:str}", api.portfolio),
        Route("/api/health", api.health),
        Route("/api/stream", api.stream),
        Mount("/static", StaticFiles(packages=[(_PACKAGE, "static")]), name="static"),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, middleware=[Middleware(HostGuard, hosts=allowed)]
    )


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the event streams when asked to exit.

    Without that, uvicorn waits for every open ``EventSource`` to hang up before it shuts down.
    """

    def __init__(self, config: uvicorn.Config, closing: threading.Event) -> None:
        super().__init__(config)
        self.closing = closing

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.closing.set()
        super().handle_exit(sig, frame)

    def request_exit(self) -> None:
        self.closing.set()
        self.should_exit = True


@contextlib.contextmanager
def _exit_quietly_on_signals(server: _Server) -> Iterator[None]:
    # uvicorn re-raises the signal that stopped it once it has shut down, under the handlers it
    # found: Python's defaults would turn Ctrl-C into a KeyboardInterrupt and SIGTERM into death
    # by signal. These make both a clean exit 0, as for every long-running streamfolio command.
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {s: signal.signal(s, lambda *_: server.request_exit()) for s in _SIGNALS}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def serve(
    app: Starlette,
    sock: socket.socket,
    *,
    closing: threading.Event,
    duration_s: float | None = None,
) -> None:
    """Serve ``app`` on the listening socket ``sock`` until SIGINT/SIGTERM or ``duration_s``."""
    config = uvicorn.Config(
        app,
        log_config=None,  # keep the process's logging as streamfolio set it up
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    server = _Server(config, closing)
    timer = threading.Timer(duration_s, server.request_exit) if duration_s is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        with _exit_quietly_on_signals(server):
            server.run(sockets=[sock])
    finally:
        if timer is not None:
            timer.cancel()
    if not server.started:
        raise StreamfolioError("the dashboard's web server did not start; see the log above")
