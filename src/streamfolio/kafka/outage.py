"""Broker outages as this process's Kafka clients see them.

Every Kafka client of a component (producers, consumers, admin clients made through
:func:`observed`) reports to one :class:`BrokerWatch` per process. librdkafka reconnects by
itself with bounded exponential back-off (``reconnect.backoff.ms`` 100 ms doubling up to
``reconnect.backoff.max.ms`` 10 s), and used to log every failed attempt; instead, the watch
logs an outage once when it starts, at most once a minute while it lasts (with how long it has
lasted) and once when it ends, and librdkafka's per-attempt connection failures are only counted.
A component can ask :attr:`BrokerWatch.down` (e.g. not to wait for offset commits while the
broker is away), and the demo reads its state from the file named by ``STREAMFOLIO_STATUS_FILE``.

Refused credentials are no outage: waiting does not cure a wrong password. The watch logs the
refusal once as an error, sets :attr:`BrokerWatch.refused` and asks the process to stop
(SIGTERM to itself, so the component stops as on any stop request, spooling what it must);
:func:`streamfolio.cli_support.command_errors` then exits with the configuration error's code.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError

log = logging.getLogger("streamfolio.outage")

STATUS_FILE_ENV = "STREAMFOLIO_STATUS_FILE"
"""Where a component writes its state (``running``, ``waiting for the broker``) as JSON, for a
supervisor such as the demo; unset: nowhere."""

REPEAT_S = 60.0
"""While an outage lasts, it is logged again at most this often."""
GRACE_S = 2.0
"""A loss of every broker shorter than this (a reconnect, an idle connection closed by the
broker) is no outage and is not logged."""
STATISTICS_INTERVAL_MS = 1000
"""How often each client reports its brokers' states (librdkafka statistics)."""
RECONNECT_BACKOFF_MS = 100
RECONNECT_BACKOFF_MAX_MS = 10_000

# librdkafka log facilities that report one failed connection attempt: the outage is the news.
_ATTEMPT_FACILITIES = frozenset({"FAIL"})
# What a broker says to credentials it does not accept (SASL, or a client certificate).
_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED})


def _stop_this_process() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _duration(seconds: float) -> str:
    """``95.0`` → ``'1 min 35 s'``.

    >>> _duration(4.2), _duration(95.0), _duration(3725)
    ('4 s', '1 min 35 s', '62 min 5 s')
    """
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


class BrokerWatch:
    """Whether this process reaches its Kafka brokers, from what its clients report.

    ``lost`` is called when a client finds every broker down, ``reached`` when any client is
    connected to one again, ``tick`` now and then (each client's statistics, every second).

    >>> now = [0.0]
    >>> watch = BrokerWatch("store", clock=lambda: now[0], logger=None)
    >>> watch.lost("1/1 brokers are down")
    >>> watch.down            # not yet: a blip shorter than the grace period is no outage
    False
    >>> now[0] = 3.0; watch.tick()
    >>> watch.down, watch.outages
    (True, 1)
    >>> now[0] = 75.0; watch.reached()
    >>> watch.down, round(watch.last_outage_s)
    (False, 75)
    """

    def __init__(
        self,
        component: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        repeat_s: float = REPEAT_S,
        grace_s: float = GRACE_S,
        logger: logging.Logger | None = log,
        status_path: Path | None = None,
        on_refused: Callable[[], None] = _stop_this_process,
    ) -> None:
        self.component = component
        self._clock = clock
        self._repeat_s = repeat_s
        self._grace_s = grace_s
        self._log = logger
        self._status_path = status_path
        self._on_refused = on_refused
        self.refused: str | None = None
        """Why the brokers refused this process's credentials, once they have."""
        self._lock = threading.Lock()
        self._suspected_since: float | None = None
        self._reason = ""
        self._declared = False
        self._last_said = 0.0
        self.outages = 0
        self.last_outage_s = 0.0
        self.attempts_failed = 0
        self.errors: Counter[str] = Counter()
        self._write_status("running")

    @property
    def down(self) -> bool:
        """True while an outage is declared (every broker unreachable for the grace period)."""
        return self._declared

    @property
    def outage_s(self) -> float:
        """How long the current outage has lasted; 0 when there is none."""
        since = self._suspected_since
        return self._clock() - since if (self._declared and since is not None) else 0.0

    def lost(self, reason: str) -> None:
        """A client found every broker down."""
        with self._lock:
            if self._suspected_since is None:
                self._suspected_since = self._clock()
                self._reason = reason
        self.tick()

    def reached(self) -> None:
        """A client is connected to a broker (or received or delivered a message)."""
        with self._lock:
            since, declared = self._suspected_since, self._declared
            self._suspected_since = None
            self._declared = False
        if since is None:
            return
        if declared:
            self.last_outage_s = self._clock() - since
            self._say(
                "Kafka reachable again after an outage of %s; resuming",
                _duration(self.last_outage_s),
            )
            self._write_status("running")

    def tick(self) -> None:
        """Declare a suspected outage once it outlasts the grace period; repeat it once a
        minute."""
        with self._lock:
            since = self._suspected_since
            if since is None:
                return
            now = self._clock()
            if not self._declared:
                if now - since < self._grace_s:
                    return
                self._declared = True
                self.outages += 1
                self._last_said = now
                first = True
            elif now - self._last_said >= self._repeat_s:
                self._last_said = now
                first = False
            else:
                return
        if first:
            self._say(
                "Kafka unreachable (%s); %s waits and retries with back-off up to %d s, "
                "nothing is lost",
                self._reason,
                self.component,
                RECONNECT_BACKOFF_MAX_MS // 1000,
            )
            self._write_status("waiting for the broker")
        else:
            self._say("Kafka still unreachable after %s; waiting", _duration(now - since))

    # -- librdkafka callbacks -------------------------------------------------------------

    def on_error(self, error: KafkaError) -> None:
        """``error_cb``: every broker down starts an outage; other errors are logged once."""
        code = error.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            # librdkafka's own text ("0/2 brokers are down") counts oddly; say what it means.
            self.lost("no broker answers")
            return
        name = error.name()
        self.errors[name] += 1
        if code in _REFUSED:
            self.refuse(error.str())
            return
        if code in (KafkaError._TRANSPORT, KafkaError._RESOLVE, KafkaError._TIMED_OUT):
            return  # one connection's trouble; the outage, if any, is reported as such
        if self.errors[name] == 1 and self._log is not None:
            self._log.warning("Kafka reports %s; further ones are only counted", error.str())

    def refuse(self, reason: str) -> None:
        """The brokers refused this process's credentials: say so once and stop the process.

        >>> stopped = []
        >>> watch = BrokerWatch("feed", logger=None, on_refused=lambda: stopped.append(1))
        >>> watch.refuse("SASL authentication error: Authentication failed")
        >>> watch.refuse("again")
        >>> watch.refused, stopped
        ('SASL authentication error: Authentication failed', [1])
        """
        with self._lock:
            if self.refused is not None:
                return
            self.refused = reason
        if self._log is not None:
            self._log.error(
                "%s: Kafka refused its credentials (%s); waiting will not help: fix "
                "kafka.security (the %s's principal, docs/secrets.md) and start it again",
                self.component,
                reason,
                self.component,
            )
        self._write_status("refused by Kafka")
        self._on_refused()

    def on_statistics(self, text: str) -> None:
        """``stats_cb``: a broker in state UP ends any outage; otherwise time passes."""
        try:
            brokers = json.loads(text).get("brokers", {})
        except ValueError:
            return
        if any(b.get("state") == "UP" for b in brokers.values() if b.get("source") != "internal"):
            self.reached()
        else:
            self.tick()

    def filter(self, record: logging.LogRecord) -> bool:
        """Drop librdkafka's per-attempt connection failures (counted instead)."""
        args = record.args
        if isinstance(args, tuple) and args and args[0] in _ATTEMPT_FACILITIES:
            self.attempts_failed += 1
            return False
        return True

    def _say(self, message: str, *args: Any) -> None:
        if self._log is not None:
            self._log.warning("%s: " + message, self.component, *args)

    def _write_status(self, state: str) -> None:
        if self._status_path is None:
            return
        # A supervisor's convenience: never a reason to fail.
        with contextlib.suppress(OSError):
            self._status_path.write_text(
                json.dumps({"state": state, "since": time.time(), "pid": os.getpid()}),
                encoding="utf-8",
            )


_watch: BrokerWatch | None = None
_watch_lock = threading.Lock()


def broker_watch(component: str | None = None) -> BrokerWatch:
    """This process's watch; the first call (with the component's name) makes it."""
    global _watch
    with _watch_lock:
        if _watch is None:
            status = os.environ.get(STATUS_FILE_ENV)
            _watch = BrokerWatch(
                component or "streamfolio", status_path=Path(status) if status else None
            )
        elif component is not None and _watch.component == "streamfolio":
            _watch.component = component
        return _watch


_LIBRDKAFKA_LOG = logging.getLogger("streamfolio.librdkafka")


def observed(config: dict[str, Any], *, logger: logging.Logger | None = None) -> dict[str, Any]:
    """``config`` with this process's watch listening: errors, statistics and log lines of
    the client go through it, and librdkafka's back-off is set explicitly."""
    watch = broker_watch()
    target = logger or _LIBRDKAFKA_LOG
    if watch.filter not in target.filters:
        target.addFilter(watch.filter)
    return {
        "reconnect.backoff.ms": RECONNECT_BACKOFF_MS,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **config,
        "error_cb": watch.on_error,
        "stats_cb": watch.on_statistics,
        "statistics.interval.ms": STATISTICS_INTERVAL_MS,
        "logger": target,
    }


@contextlib.contextmanager
def stop_through_callbacks() -> Iterator[None]:
    """Around a client's ``poll`` or ``consume``: a stop signal is never lost in a callback.

    The watch's callbacks (statistics, errors, log lines) run inside ``poll``; a signal whose
    handler raises there (Ctrl-C's KeyboardInterrupt, a SIGTERM's StopRequested) is dropped by
    the client, which then returns nothing and sets no exception: Python reports a
    ``SystemError``. Since those callbacks raise nothing of their own, that is the stop.

    >>> try:
    ...     with stop_through_callbacks():
    ...         raise SystemError("<method 'poll'> returned NULL without setting an exception")
    ... except KeyboardInterrupt as stop:
    ...     print(stop)
    stopped while a Kafka client ran a callback
    """
    try:
        yield
    except SystemError as exc:
        if "without setting an exception" not in str(exc):
            raise
        raise KeyboardInterrupt("stopped while a Kafka client ran a callback") from None


def close_within(close: Callable[[], object], seconds: float) -> bool:
    """Run a client's ``close`` for at most ``seconds``; True when it finished.

    A consumer's close commits and leaves its group, which waits for the broker (up to the
    session timeout); during an outage a component must still stop promptly, so the close goes
    on in a daemon thread that dies with the process.
    """
    done = threading.Event()

    def run() -> None:
        try:
            with contextlib.suppress(Exception):  # on the way out: nothing left to tell
                close()
        finally:
            done.set()

    threading.Thread(target=run, name="kafka-close", daemon=True).start()
    return done.wait(seconds)
