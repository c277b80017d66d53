"""The store's dead letters: what it did not store goes to the dead-letter topic, never lost.

A message the store does not keep is sent as a ``DeadLetter`` (component ``store``, the source
topic, partition, offset, key and the original bytes) through a producer of its own, made at the
first one (:class:`DeadLetterOutbox`). Before the service commits its offsets it waits until every
dead letter sent is delivered (:meth:`DeadLetterOutbox.deliver`): if one cannot be, the offsets
stay uncommitted and the messages are read, and dead-lettered, again at the next start.

>>> one_line("first line\\n  second line")
'first line'
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

from streamfolio.config import KafkaSettings
from streamfolio.errors import StreamfolioError
from streamfolio.intake import Rejected
from streamfolio.kafka.clients import ConsumedRecord, RecordProducer
from streamfolio.serde import codec_for
from streamfolio.store.schema import StoreError

__all__ = ["COMPONENT", "DeadLetterOutbox", "DeadLetterProducer", "encode_dead_letter", "one_line"]

log = logging.getLogger(__name__)

COMPONENT: Final = "store"
"""The ``component`` of the store's dead letters."""

_DELIVERY_WAIT_S: Final = 1.0  # per round: a stop request is noticed within it
_DETAIL_CHARS: Final = 500


class DeadLetterProducer(Protocol):
    """What the service needs of a producer for its dead letters (a fake one in unit tests);
    :class:`~streamfolio.kafka.clients.RecordProducer` is one."""

    @property
    def failed(self) -> int:
        """Deliveries that failed so far."""
        ...

    def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None: ...

    def flush(self, timeout: float = 30.0) -> int: ...


def one_line(text: str) -> str:
    """``text`` as one short line, for logs and dead letters."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    line = lines[0] if lines else "(no detail)"
    return line if len(line) <= _DETAIL_CHARS else line[: _DETAIL_CHARS - 1] + "…"


def encode_dead_letter(item: ConsumedRecord, reason: str, detail: str) -> bytes:
    """The Avro bytes of the store's dead letter for ``item`` (``detail``: one line)."""
    letter = Rejected(reason, detail).dead_letter(
        source_topic=item.topic,
        payload=item.value,
        component=COMPONENT,
        partition=item.partition if item.partition >= 0 else None,
        offset=item.offset if item.offset >= 0 else None,
        key=item.key,
    )
    codec = codec_for("DeadLetter")
    try:
        return codec.encode(letter.to_record())
    except (StreamfolioError, ValueError):
        # A detail Avro cannot carry (a lone surrogate, say): escape it, keep the letter.
        safe = detail.encode("ascii", "backslashreplace").decode("ascii")
        return codec.encode(letter.to_record() | {"detail": safe})


class DeadLetterOutbox:
    """Sends dead letters to ``topic`` and tells when all of them are delivered.

    ``producer`` is made from ``kafka`` at the first dead letter unless one is given.
    """

    def __init__(
        self, kafka: KafkaSettings, topic: str, producer: DeadLetterProducer | None = None
    ) -> None:
        self.topic = topic
        self._kafka = kafka
        self._producer = producer
        self._undelivered = 0  # dead letters sent since the last flush
        self._failed_seen = 0  # the producer's failed deliveries already reported

    def send(self, item: ConsumedRecord, reason: str, detail: str) -> None:
        """Send the dead letter of ``item`` (delivery is awaited by :meth:`deliver`)."""
        value = encode_dead_letter(item, reason, detail)
        if self._producer is None:
            self._producer = RecordProducer(self._kafka, component="store")
        self._producer.send_raw(self.topic, None, value)
        self._undelivered += 1

    def deliver(self, *, pending: int, give_up: Callable[[], bool]) -> None:
        """Wait until every dead letter sent is delivered: only then may offsets be committed.

        Raises :class:`StoreError` (offsets left uncommitted, so the ``pending`` messages read
        are read and dead-lettered again at the next start) when a delivery failed, or when the
        dead-letter topic is still unreachable once ``give_up()`` says so (the service is told to
        stop, or its duration is over).
        """
        if not self._undelivered or self._producer is None:
            return
        producer = self._producer
        warned = False
        while True:
            remaining = producer.flush(_DELIVERY_WAIT_S)
            if remaining == 0:
                break
            if give_up():
                raise StoreError(
                    f"{remaining} dead letter(s) not delivered to {self.topic}: "
                    f"the offsets of {pending} message(s) read were not committed; they "
                    "are read again at the next start"
                )
            if not warned:
                log.warning(
                    "%d dead letter(s) not delivered to %s yet; holding the offset commit",
                    remaining,
                    self.topic,
                )
                warned = True
        failed = producer.failed - self._failed_seen
        self._failed_seen = producer.failed
        if failed:
            raise StoreError(
                f"{failed} dead letter(s) could not be delivered to {self.topic} "
                f"(see the log): the offsets of {pending} message(s) read were not "
                "committed; they are read again at the next start"
            )
        self._undelivered = 0
