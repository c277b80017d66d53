"""The streamfolio error tree.

Every error a user can cause derives from :class:`StreamfolioError` and says what went wrong and
how to fix it. Code that handles streams catches these, dead-letters the message and carries on.
Only these leave a service; a bare ``ValueError`` or ``TypeError`` escaping one is a bug.

Exit codes of the command line (as POSIX tools and httpx's CLI): 2 for a usage error (a bad
option, argument or configuration: :class:`UsageError`, :class:`ConfigError`), 1 for any other
:class:`StreamfolioError` (the broker is unreachable, a file is malformed, the job failed).
"""

from __future__ import annotations


class StreamfolioError(Exception):
    """Base class of every error streamfolio raises on purpose."""


class UsageError(StreamfolioError):
    """A command-line option or argument is wrong. The message names it and the fix."""


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
