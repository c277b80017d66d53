"""A feed's unsent messages: kept on disk when it must stop during an outage, sent first next time.

The producer keeps every message it accepted in librdkafka's memory until the broker
acknowledges it (``message.timeout.ms=0``), so a broker outage loses nothing while the feed
runs. To stop promptly all the same (docs/outage.md):

* :class:`StopSignals` makes SIGTERM stop a feed as Ctrl-C does (a ``KeyboardInterrupt`` in the
  main thread); a second signal only hurries the stop.
* :meth:`Spool.finish` waits for the acknowledgements: without limit when the feed ended by
  itself (``--max-ticks``, ``--duration``, the end of a replay; a signal then stops the wait),
  at most :data:`STOP_FLUSH_S` when it was asked to stop (less when the broker acknowledges
  nothing for half a second: it is away). What is still unacknowledged is
  purged from the producer and appended to the feed's :class:`~streamfolio.kafka.unsent.
  UnsentFile` (``feed.spool_dir``, one file per prices topic and client id).
* :meth:`Spool.republish`, when a feed starts, produces that file's messages in their order,
  to their topic, partition, key and timestamp, waits until the broker has them all (as long
  as the broker is away; a stop request then leaves the file as it was), and removes the file.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Final, Protocol

from streamfolio.errors import StreamfolioError
from streamfolio.feeds.heartbeat import RawSink
from streamfolio.kafka.unsent import UnsentFile, UnsentMessage

__all__ = ["STOP_FLUSH_S", "Spool", "SpoolProducer", "StopSignals", "spool_path"]

STOP_FLUSH_S: Final = 2.0
"""On a stop request, how long the broker has to acknowledge what the feed accepted."""
_STALLED_S: Final = 0.5
"""On a stop request, the flush ends once the broker has acknowledged nothing for this long."""
_FIRST_REPORT_S: Final = 5.0
_REPORT_EVERY_S: Final = 60.0  # the outage itself is logged by streamfolio.kafka.outage

Progress = Callable[[str], None]


class SpoolProducer(RawSink, Protocol):
    """What the spool needs of :class:`~streamfolio.kafka.clients.RecordProducer`."""

    failed: int

    def flush(self, timeout: float = 30.0) -> int: ...

    def stop_waiting(self) -> None: ...

    def purge(self) -> list[UnsentMessage]: ...


def spool_path(spool_dir: Path, topic: str, client_id: str) -> Path:
    """The unsent-messages file of the feed on ``topic`` with ``client_id``.

    >>> spool_path(Path(".cache/feed"), "intraday-stock-prices", "streamfolio feed/1")
    PosixPath('.cache/feed/intraday-stock-prices.streamfolio_feed_1.unsent.jsonl')
    """
    client = re.sub(r"[^A-Za-z0-9._-]", "_", client_id)
    return spool_dir / f"{topic}.{client}.unsent.jsonl"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, ``kill`` and a closed terminal: each stops a feed the same way, its queue kept."""


class StopSignals:
    """Within the block, SIGINT, SIGTERM and SIGHUP stop the feed alike: the first raises
    ``KeyboardInterrupt`` in the main thread (after ``on_stop``); later ones are counted, to
    hurry the stop, and never interrupt it. Outside the main thread it installs nothing.

    >>> before = signal.getsignal(signal.SIGTERM)
    >>> with StopSignals() as signals:
    ...     signal.getsignal(signal.SIGTERM) is not before
    True
    >>> signal.getsignal(signal.SIGTERM) is before, signals.received
    (True, 0)
    """

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self._on_stop = on_stop
        self.received = 0
        self._interrupting = True
        self._calmed_at: int | None = None
        self._previous: dict[signal.Signals, object] = {}

    def calm(self) -> None:
        """From now on a signal only counts: the stop under way must not be cut short."""
        self._interrupting = False
        if self._calmed_at is None:
            self._calmed_at = self.received

    @property
    def hurried(self) -> bool:
        """A signal arrived since :meth:`calm`: wait no longer for the broker."""
        return self._calmed_at is not None and self.received > self._calmed_at

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        self.received += 1
        if self._on_stop is not None:
            self._on_stop()
        if self._interrupting:
            self._interrupting = False
            raise KeyboardInterrupt

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()


class Spool:
    """A feed's producer and its unsent-messages file: :meth:`republish` at the start,
    :meth:`finish` at the end."""

    def __init__(
        self,
        producer: SpoolProducer,
        path: Path,
        progress: Progress,
        signals: StopSignals | None = None,
        *,
        stop_flush_s: float = STOP_FLUSH_S,
    ) -> None:
        self.producer = producer
        self.file = UnsentFile(path)
        self._progress = progress
        self._signals = signals or StopSignals()
        self._stop_flush_s = stop_flush_s

    @property
    def path(self) -> Path:
        return self.file.path

    def republish(self) -> int:
        """Produce the messages kept by the last run and wait for the broker to have them;
        returns how many. ``KeyboardInterrupt`` (a stop request) leaves the file as it was."""
        messages = self.file.read()
        if not messages:
            self.file.remove()  # an empty or truncated file holds nothing to send
            return 0
        failed = self.producer.failed
        try:
            for m in messages:
                self.producer.send_raw(
                    m.topic, m.key, m.value, timestamp_ms=m.timestamp_ms, partition=m.partition
                )
            self._wait(f"of the {len(messages)} kept from the last run")
        except KeyboardInterrupt:
            self._signals.calm()
            self.producer.stop_waiting()
            self.producer.purge()  # they are all still in the file
            self._progress(
                f"stopping: the {len(messages)} message(s) kept from the last run stay in "
                f"{self.path} for the next run"
            )
            raise
        lost = self.producer.failed - failed
        if lost:
            raise StreamfolioError(
                f"{lost} of the {len(messages)} message(s) kept in {self.path} from the last run "
                "were refused by the broker (the error is logged above); the file is kept (fix "
                "the cause, e.g. create the topics with `streamfolio kafka up`, and start the "
                "feed again, or move the file away to drop them)"
            )
        self.file.remove()
        self._progress(f"republished {len(messages)} message(s) kept from the last run")
        return len(messages)

    def finish(self, *, requested: bool) -> int:
        """Wait for the broker's acknowledgements; returns how many messages were kept on disk.

        Without a stop request the wait has no limit (a signal then makes it one); with one,
        it lasts :data:`STOP_FLUSH_S` at most, and what is left goes to the file.
        """
        if not requested:
            try:
                self._wait("accepted")
                return 0
            except KeyboardInterrupt:
                self._progress(
                    f"stopping: waiting {self._stop_flush_s:g} s at most for the broker "
                    "(what it has not acknowledged by then is kept for the next run)"
                )
        return self._keep_the_rest()

    def _wait(self, what: str) -> None:
        """Until the broker has acknowledged everything, reporting now and then."""
        started = time.monotonic()
        report_at = started + _FIRST_REPORT_S
        while True:
            remaining = self.producer.flush(1.0)
            if remaining == 0:
                return
            now = time.monotonic()
            if now >= report_at:
                report_at = now + _REPORT_EVERY_S
                self._progress(
                    f"waiting for the broker: {remaining} message(s) {what} not yet "
                    f"acknowledged after {now - started:.0f} s; Ctrl-C or SIGTERM stops and "
                    f"keeps them in {self.path}"
                )

    def _keep_the_rest(self) -> int:
        self._signals.calm()
        self.producer.stop_waiting()
        now = time.monotonic()
        deadline = now + self._stop_flush_s
        remaining: int | None = None
        moved = now  # when the broker last acknowledged something
        while not self._signals.hurried:
            left = deadline - now
            # A broker that acknowledges nothing for a while is away: the time is better left
            # to purging and writing, which take seconds with a full queue.
            if left <= 0 or now - moved >= _STALLED_S:
                break
            before, remaining = remaining, self.producer.flush(min(left, 0.1))
            if remaining == 0:
                break
            now = time.monotonic()
            if before is None or remaining < before:
                moved = now
        unsent = self.producer.purge()
        if not unsent:
            return 0
        kept = self.file.append(unsent)
        self._progress(
            f"kept {kept} message(s) the broker had not acknowledged in {self.path}; the next "
            "feed on this topic publishes them before anything new"
        )
        return kept
