"""Development tooling shared by the local Kafka broker and the Flink job: Java and Maven.

* :mod:`streamfolio.devtools.java` finds a JDK (``$JAVA_HOME`` or ``java`` on ``PATH``) and
  checks its version;
* :mod:`streamfolio.devtools.maven` runs Maven (``dependency:copy-dependencies``, ``package``)
  to fill a cache folder of jars once, atomically, under a lock, with a completion stamp;
* :mod:`streamfolio.devtools.files` holds what both need: the checkout's root, an advisory file
  lock and the tail of a log.

These raise :class:`ToolError`; callers that own a more specific error (``LocalKafkaError``,
``ConnectorError``) translate it with :func:`reraise_as`, so users keep seeing those.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from streamfolio.errors import StreamfolioError

__all__ = ["ToolError", "reraise_as"]


class ToolError(StreamfolioError):
    """A development tool (Java, Maven) is missing, too old, or failed. Says what to do."""


@contextlib.contextmanager
def reraise_as(error: Callable[[str], StreamfolioError]) -> Iterator[None]:
    """Turn a :class:`ToolError` raised inside the block into ``error(message)``.

    >>> class BrokerError(StreamfolioError): ...
    >>> with reraise_as(BrokerError):
    ...     raise ToolError("no mvn")
    Traceback (most recent call last):
    ...
    streamfolio.devtools.BrokerError: no mvn
    """
    try:
        yield
    except ToolError as exc:
        raise error(str(exc)) from None
