"""Tell a portfolio's owner what the rebalancer decided, through apprise.

Each portfolio lists apprise URLs under ``notify`` in the configuration (``mailto://…``,
``slack://…``, ``tgram://…``, ``json://host/path`` for a webhook, …). The service hands a
:class:`Notification` to a :class:`Notifier` only after the transaction holding the decision has
committed, so an aborted decision is never announced. Delivery runs on a background thread: a
slow or unreachable mail server delays nobody's decision, and a failure is logged and counted,
never raised. A portfolio without URLs gets a log line instead.

URLs carry credentials (a Slack webhook's path, a ``?token=``, a password): the configuration
keeps them as :class:`~streamfolio.config.SecretURL`, a :class:`Notification` reveals them only to
its sender (never in its repr), and logs show them masked, scheme and host only
(:func:`~streamfolio.config.mask_url`: ``https://hooks.slack.com/***``). apprise's own log lines,
which name the URLs it posts to, pass through :class:`Redactor` first.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from streamfolio.config import PortfolioSettings, mask_url
from streamfolio.messages import RebalanceEvent

__all__ = [
    "Notification",
    "Notifier",
    "Redactor",
    "format_weights",
    "notification_for",
    "preload_apprise",
    "send_with_apprise",
]

log = logging.getLogger(__name__)

NotificationKind = Literal["rebalance", "hold"]
Sender = Callable[["Notification"], bool]


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to a portfolio's owner: what to say and where to send it.

    ``urls`` are revealed, for the sender: they never show in the repr, and logs use
    :attr:`masked_urls`.
    """

    portfolio_id: str
    kind: NotificationKind
    title: str
    body: str
    urls: tuple[str, ...] = field(default=(), repr=False)
    owner: str | None = None
    event_id: str = ""

    @property
    def masked_urls(self) -> str:
        """The URLs as logs may show them: scheme and host only.

        >>> Notification("p", "hold", "t", "b", ("https://u:pw@example.com/T/B/X",)).masked_urls
        'https://example.com/***'
        """
        return ", ".join(mask_url(u) for u in self.urls)


def format_weights(weights: Mapping[str, float]) -> str:
    """Weights as percentages, in the given ticker order.

    >>> format_weights({"ATW": 0.4215, "BCP": 0.5785})
    'ATW 42.15 %, BCP 57.85 %'
    """
    return ", ".join(f"{ticker} {100.0 * weight:.2f} %" for ticker, weight in weights.items())


def _when(timestamp_ms: int) -> str:
    moment = datetime.fromtimestamp(timestamp_ms / 1000.0, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def notification_for(event: RebalanceEvent, portfolio: PortfolioSettings) -> Notification:
    """The owner's message for a ``rebalance`` or ``hold`` decision of ``portfolio``.

    >>> e = RebalanceEvent("banks", 1_790_845_200_000, "sharpe 0.12 below threshold 0.30",
    ...                    "rebalance", {"ATW": 0.5, "BCP": 0.5}, {"ATW": 0.7, "BCP": 0.3},
    ...                    0.12, 0.58, 0.081, 0.14, 0.2, "optimal")
    >>> n = notification_for(e, PortfolioSettings(id="banks", tickers=["ATW", "BCP"]))
    >>> n.title
    'streamfolio: banks rebalanced (Sharpe 0.12 -> 0.58)'
    >>> print(n.body)  # doctest: +NORMALIZE_WHITESPACE
    Portfolio banks was rebalanced at 2026-10-01 09:00:00 UTC.
    Reason: sharpe 0.12 below threshold 0.30
    Expected Sharpe ratio: 0.12 -> 0.58 (expected return 8.10 %, risk 14.00 % a year).
    One-way turnover: 20.00 %.
    New weights: ATW 70.00 %, BCP 30.00 %
    Old weights: ATW 50.00 %, BCP 50.00 %
    Event: banks@1790845200000
    """
    pid = event.portfolio_id
    greeting = [f"Hello {portfolio.owner},"] if portfolio.owner else []
    if event.decision == "rebalance":
        title = (
            f"streamfolio: {pid} rebalanced "
            f"(Sharpe {event.sharpe_before:.2f} -> {event.sharpe_after:.2f})"
        )
        lines = [
            *greeting,
            f"Portfolio {pid} was rebalanced at {_when(event.timestamp)}.",
            f"Reason: {event.reason}",
            f"Expected Sharpe ratio: {event.sharpe_before:.2f} -> {event.sharpe_after:.2f} "
            f"(expected return {100 * event.expected_return_after:.2f} %, "
            f"risk {100 * event.risk_after:.2f} % a year).",
            f"One-way turnover: {100 * event.turnover:.2f} %.",
            f"New weights: {format_weights(event.new_weights)}",
            f"Old weights: {format_weights(event.old_weights)}",
            f"Event: {event.event_id}",
        ]
        kind: NotificationKind = "rebalance"
    else:
        threshold = portfolio.policy.sharpe_threshold
        title = (
            f"streamfolio: {pid} Sharpe {event.sharpe_before:.2f} below {threshold:.2f}, "
            "no rebalance helps"
        )
        lines = [
            *greeting,
            f"Portfolio {pid} has a Sharpe ratio of {event.sharpe_before:.2f}, below its "
            f"threshold {threshold:.2f}, at {_when(event.timestamp)}, and no feasible "
            "rebalance improves it enough: the weights stay as they are.",
            f"Reason: {event.reason}",
            f"Current weights: {format_weights(event.old_weights)}",
            f"Event: {event.event_id}",
        ]
        kind = "hold"
    return Notification(
        portfolio_id=pid,
        kind=kind,
        title=title,
        body="\n".join(lines),
        urls=tuple(url.get_secret_value() for url in portfolio.notify),
        owner=portfolio.owner,
        event_id=event.event_id,
    )


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]{0,31}://[^\s'\"<>)]+")


def _secret_parts(url: str) -> set[str]:
    # What of a URL may be a secret: all of it, and its credentials, path segments, query
    # values and (for schemes that put a token there) host, as other messages quote them.
    parts = {url}
    try:
        split = urllib.parse.urlsplit(url)
    except ValueError:
        return parts
    parts.update({split.path, split.query, split.fragment})
    parts.update({split.password or "", split.username or ""})
    if mask_url(url).endswith("://***"):  # a token in the host's place (slack://TokenA/…)
        parts.add(split.netloc)
    parts.update(split.path.split("/"))
    parts.update(v for _k, v in urllib.parse.parse_qsl(split.query))
    return {p for p in parts if len(p) >= 4 and p not in {"localhost", "127.0.0.1"}}


class Redactor(logging.Filter):
    """Masks notification URLs, and their parts, in the log records it filters.

    Installed on apprise's logger, which quotes the URLs it posts to (paths, user names).

    >>> r = Redactor()
    >>> r.add(["json://127.0.0.1:1/hooks/T000/B000/XXXX?token=abcd"])
    >>> r.redact("POST to http://127.0.0.1:1/hooks/T000/B000/XXXX failed: /hooks/T000/B000/XXXX")
    'POST to http://127.0.0.1:1/*** failed: ***'
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()

    def add(self, urls: Iterable[str]) -> None:
        """Mask these URLs (and their parts) from now on."""
        with self._lock:
            known = set(self._secrets)
            for url in urls:
                known |= _secret_parts(url)
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        """``text`` with every URL masked and every known secret part replaced by ``***``."""
        text = _URL_IN_TEXT.sub(lambda m: mask_url(m.group(0)), text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: let logging report it as it would
            return True
        record.msg, record.args = self.redact(message), None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


_redactor = Redactor()


_apprise_ready = threading.Lock()
_apprise_loaded = False


def preload_apprise() -> None:
    """Import apprise and load its plugins now, once.

    apprise loads its plugins on first use, and its e-mail plugin imports the standard library's
    deprecated ``imghdr``; doing it here, with that warning silenced, keeps it off the worker
    thread (where the warnings filter cannot be changed safely) and out of the first delivery.
    """
    global _apprise_loaded
    with _apprise_ready:
        if _apprise_loaded:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import apprise

            logging.getLogger("apprise").addFilter(_redactor)
            apprise.Apprise().add("json://localhost")  # parsing a URL loads every plugin
        _apprise_loaded = True


def send_with_apprise(notification: Notification) -> bool:
    """Send ``notification`` to every one of its URLs; True if all accepted it.

    URLs apprise cannot use are logged (masked) and make the result False.
    """
    preload_apprise()
    import apprise  # imported here: only a service with notification URLs needs it

    _redactor.add(notification.urls)
    client = apprise.Apprise()
    usable = True
    for i, url in enumerate(notification.urls):
        if not client.add(url):
            log.warning(
                "notification URL #%d (%s) of portfolio %s is not usable by apprise",
                i + 1,
                mask_url(url),
                notification.portfolio_id,
            )
            usable = False
    if len(client) == 0:
        return False
    notify_type = (
        apprise.NotifyType.INFO if notification.kind == "rebalance" else apprise.NotifyType.WARNING
    )
    result = client.notify(
        body=notification.body, title=notification.title, notify_type=notify_type
    )
    return usable and bool(result)


class Notifier:
    """Delivers notifications on one background thread, in submission order.

    ``send`` does the delivery (default :func:`send_with_apprise`) and says whether it worked;
    exceptions it raises are caught and counted as failures. :meth:`close` waits for what is
    queued, up to a timeout.
    """

    def __init__(self, *, send: Sender | None = None, max_queued: int = 1000) -> None:
        self._uses_apprise = send is None
        self._send = send or send_with_apprise
        self._queue: queue.Queue[Notification | None] = queue.Queue(maxsize=max_queued)
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.logged = 0
        self.dropped = 0
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, notification: Notification) -> None:
        """Queue ``notification`` (or log it, if its portfolio has no URL); never blocks."""
        if not notification.urls:
            log.info(
                "%s (portfolio %s has no notification URL; set notify in its config)",
                notification.title,
                notification.portfolio_id,
            )
            with self._lock:
                self.logged += 1
            return
        if self._closed:
            log.warning("notifier closed; not sending: %s", notification.title)
            return
        self._start()
        try:
            self._queue.put_nowait(notification)
        except queue.Full:
            log.error("notification queue full; dropping: %s", notification.title)
            with self._lock:
                self.dropped += 1

    def _start(self) -> None:
        if self._thread is None:
            if self._uses_apprise:
                preload_apprise()  # on the caller's thread: see preload_apprise
            self._thread = threading.Thread(
                target=self._work, name="streamfolio-notifier", daemon=True
            )
            self._thread.start()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:  # close() asks the worker to stop
                return
            try:
                ok = self._send(item)
            except Exception as exc:  # a notification must never take the service down
                # The message may quote a URL; the traceback would quote it again.
                redactor = Redactor()
                redactor.add(item.urls)
                log.error(
                    "notification for %s failed: %s: %s",
                    item.portfolio_id,
                    type(exc).__name__,
                    redactor.redact(str(exc)),
                )
                ok = False
            with self._lock:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
            if ok:
                log.info("notified the owner of %s: %s", item.portfolio_id, item.title)
            else:
                log.warning(
                    "could not notify the owner of %s (%s); the decision stands",
                    item.portfolio_id,
                    item.masked_urls,
                )

    def close(self, timeout: float = 15.0) -> None:
        """Stop after delivering what is queued, waiting at most ``timeout`` seconds."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("notifications still being sent after %g s; giving up on them", timeout)
