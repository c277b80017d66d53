"""What ``job run``'s Python driver does besides running the job: it reports broker outages, and
it stops promptly, the Flink JVM with it.

The job's Kafka clients are Java, in the Flink JVM, and log to Flink's own log file
(``$FLINK_LOG_DIR``, by default ``site-packages/pyflink/log/``), not to the terminal. So the
driver watches the brokers itself: a daemon thread asks them for metadata every
:data:`PROBE_INTERVAL_S` with a librdkafka admin client, and tells this process's
:class:`~streamfolio.kafka.outage.BrokerWatch`, which says it as every other component does: once
when an outage starts, at most once a minute while it lasts, once when it ends. The job itself
waits: its clients reconnect with back-off, and Flink restarts it from its last checkpoint when
they give up (:data:`streamfolio.flink.runtime.RESTART_STRATEGY`).

Stopping: SIGTERM takes the path of Ctrl-C (a ``KeyboardInterrupt`` in the main thread, which
waits in ``env.execute``); on the way out :func:`streamfolio.flink.gateway.stop_gateway` takes
the Flink JVM down.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from streamfolio.config import Settings
from streamfolio.kafka.outage import BrokerWatch

__all__ = [
    "PROBE_INTERVAL_S",
    "BrokerProbe",
    "metadata_probe",
    "outages_to_stderr",
]

PROBE_INTERVAL_S = 2.0
"""The brokers are asked this often (and each answer is awaited at most this long)."""

Probe = Callable[[], None]
"""Asks the brokers something; raises when none answers."""


def failure_reason(error: BaseException) -> str:
    """What a failed probe says: the Kafka error's text, else the exception's.

    >>> from confluent_kafka import KafkaError, KafkaException
    >>> failure_reason(KafkaException(KafkaError(KafkaError._TRANSPORT, "no metadata")))
    'no metadata'
    >>> failure_reason(TimeoutError("slow"))
    'slow'
    """
    from streamfolio.kafka.admin.client import error_of

    kafka_error = error_of(error)
    return kafka_error.str() if kafka_error is not None else str(error) or type(error).__name__


def metadata_probe(settings: Settings, *, timeout_s: float = PROBE_INTERVAL_S) -> Probe:
    """A probe asking the configured brokers for the cluster's metadata.

    Its admin client is :func:`~streamfolio.kafka.outage.observed` like every client of the
    Python components: its errors and statistics reach the watch too, and librdkafka's
    per-attempt connection failures are counted rather than logged.
    """
    from confluent_kafka.admin import AdminClient

    from streamfolio.kafka.outage import observed

    config: dict[str, Any] = {
        **settings.kafka.client_config("job"),
        "client.id": f"{settings.kafka.client_id}-job-probe",
    }
    admin = AdminClient(observed(config))

    def probe() -> None:
        try:
            admin.list_topics(timeout=timeout_s)
        finally:
            # Serves the client's callbacks: unserved, its statistics and log lines pile up.
            admin.poll(0)

    return probe


class BrokerProbe:
    """A daemon thread that runs ``probe`` every ``interval_s`` and tells ``watch``.

    >>> from streamfolio.kafka.outage import BrokerWatch
    >>> watch = BrokerWatch("job", logger=None, grace_s=0)
    >>> def refused() -> None:
    ...     raise ConnectionRefusedError("refused")
    >>> BrokerProbe(refused, watch).round()
    >>> watch.down
    True
    >>> BrokerProbe(lambda: None, watch).round()
    >>> watch.down
    False
    """

    def __init__(
        self,
        probe: Probe,
        watch: BrokerWatch,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._probe = probe
        self._watch = watch
        self._interval_s = interval_s
        self._clock = clock
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="broker-probe", daemon=True)

    def round(self) -> None:
        """Probe once and report the outcome (``tick`` repeats an outage that goes on)."""
        try:
            self._probe()
        except Exception as error:  # any failure to get an answer is the broker's absence
            self._watch.lost(failure_reason(error))
        else:
            self._watch.reached()
        self._watch.tick()

    def start(self) -> BrokerProbe:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 0.0) -> None:
        """Ask the thread to stop; wait for it at most ``timeout_s`` (it is a daemon: a probe
        waiting for an absent broker never holds the process back)."""
        self._stopping.set()
        if self._thread.is_alive() and timeout_s > 0:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = self._clock()
            self.round()
            self._stopping.wait(max(0.0, self._interval_s - (self._clock() - started)))


def outages_to_stderr() -> None:
    """Write this process's outage lines to stderr themselves, not through the root logger.

    Once the job runs, its Python functions run in this process too (Beam's loopback worker),
    and Beam hands whatever reaches the root logger to the JVM, which writes it to Flink's log
    file. Also drops py4j's report of a call cut short by Ctrl-C (a traceback logged as an
    error): here that is how the job is stopped.
    """
    from streamfolio.kafka.outage import log

    if not any(getattr(h, "streamfolio_outages", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)  # what Python's last-resort handler writes
        handler.streamfolio_outages = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.propagate = False
    root = logging.getLogger()
    if _not_an_interrupted_call not in root.filters:
        root.addFilter(_not_an_interrupted_call)


def _not_an_interrupted_call(record: logging.LogRecord) -> bool:
    """Whether ``record`` is anything but py4j's interrupted call (it logs on the root logger)."""
    return record.msg != "KeyboardInterrupt while sending command."
