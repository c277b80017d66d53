"""The streamfolio error tree.

Every error a user can cause derives from :class:`StreamfolioError` and says what went wrong and
how to fix it. Code that handles streams catches these, dead-letters the message and carries on.
"""

from __future__ import annotations


class StreamfolioError(Exception):
    """Base class of every error streamfolio raises on purpose."""


class ConfigError(StreamfolioError):
    """A configuration value is missing or invalid. The message names the key and the fix."""

    def __init__(self, key: str, problem: str, fix: str | None = None) -> None:
        self.key = key
        self.problem = problem
        self.fix = fix
        text = f"config key '{key}': {problem}"
        if fix:
            text += f" (fix: {fix})"
        super().__init__(text)


class DataError(StreamfolioError):
    """Input data (a CSV row, an API payload, a message) is malformed.

    ``where`` locates it: a file and row, a topic/partition/offset, an URL.
    """

    def __init__(self, reason: str, where: str | None = None) -> None:
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" if where else reason)


class SchemaError(DataError):
    """A record does not fit its Avro schema, or bytes do not decode with it."""


class OptimizationError(StreamfolioError):
    """An optimisation problem is malformed (wrong shapes, inconsistent bounds)."""


class SourceError(StreamfolioError):
    """A market-data source (the exchange API, a replay file) failed."""
