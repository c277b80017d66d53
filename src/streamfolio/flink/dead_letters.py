"""The job's dead letters: one side output for every operator, counted and logged once per reason.

Every refusal is built by :meth:`streamfolio.intake.Rejected.dead_letter` (component ``job``)
and travels as encoded ``DeadLetter`` bytes in the side output :func:`dead_letter_tag`, which
the job sends to the dead-letter topic.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Final

from pyflink.common import Types
from pyflink.datastream import OutputTag

from streamfolio.intake import Rejected
from streamfolio.messages import DeadLetter
from streamfolio.serde import codec_for

__all__ = ["DEAD_LETTER_KEY", "DeadLetterLog", "dead_letter", "dead_letter_tag"]

log = logging.getLogger(__name__)

DEAD_LETTER_KEY: Final = "!dead-letter"
"""Key under which rows carrying a dead letter travel through keyed streams (no ticker or
portfolio id has a ``!``)."""


def dead_letter_tag() -> OutputTag:
    """The side output of encoded ``DeadLetter`` records (one tag name for every operator)."""
    return OutputTag("dead-letters", Types.PRIMITIVE_ARRAY(Types.BYTE()))


def dead_letter(
    reason: str,
    detail: str,
    source_topic: str,
    payload: bytes,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
) -> DeadLetter:
    """A ``DeadLetter`` from the job; the payload is the original value, unchanged."""
    return Rejected(reason, detail).dead_letter(
        source_topic=source_topic,
        payload=payload,
        component="job",
        partition=partition,
        offset=offset,
        key=key,
    )


class DeadLetterLog:
    """Encodes dead letters, counting them by reason and logging the first of each (a flood
    stays one line).

    Calling it gives a letter as a side-output pair ``(dead_letter_tag(), bytes)``.
    """

    def __init__(self, operator: str) -> None:
        self.operator = operator
        self.counts: Counter[str] = Counter()

    def __call__(
        self,
        reason: str,
        detail: str,
        source_topic: str,
        payload: bytes,
        *,
        partition: int | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> Any:
        letter = dead_letter(
            reason, detail, source_topic, payload, partition=partition, offset=offset, key=key
        )
        return dead_letter_tag(), self.encode(letter)

    def encode(self, letter: DeadLetter) -> bytes:
        if self.counts[letter.reason] == 0:
            log.warning(
                "%s: dead-lettered (%s): %s; further ones are only counted",
                self.operator,
                letter.reason,
                letter.detail,
            )
        self.counts[letter.reason] += 1
        return codec_for("DeadLetter").encode(letter.to_record())
