"""The store service's options (the CLI's) and the counts it keeps."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

from streamfolio.errors import UsageError
from streamfolio.store.schema import DEFAULT_DATABASE, table_names

__all__ = ["DEFAULT_GROUP", "StoreOptions", "StoreStats"]

DEFAULT_GROUP: Final = "streamfolio-store"


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How the store service runs (the CLI's options)."""

    database: str = DEFAULT_DATABASE
    group_id: str = DEFAULT_GROUP
    from_beginning: bool = False
    duration_s: float | None = None
    batch_size: int = 500
    batch_seconds: float = 1.0
    status_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1, not {self.batch_size}")
        if self.batch_seconds <= 0:
            raise UsageError(f"batch seconds must be positive, not {self.batch_seconds}")
        if self.duration_s is not None and self.duration_s < 0:
            raise UsageError(f"duration must not be negative, not {self.duration_s}")


@dataclass
class StoreStats:
    """What the service did so far."""

    consumed: int = 0
    """Messages read (stored or skipped)."""
    written: Counter[str] = field(default_factory=Counter)
    """Rows upserted per table (a replayed message counts again)."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Messages not stored, by reason: the intake's reasons or ``store_refused``."""
    dead_lettered: int = 0
    """Dead letters sent (each skipped message once; a replayed one again)."""
    transactions: int = 0
    lag: int | None = None
    """Messages behind the end of the topics at the last status, None if unknown."""
    started: float = field(default_factory=time.monotonic)

    def line(self) -> str:
        """One status line: rows per table, skipped, lag, rate."""
        rows = ", ".join(f"{name} {self.written.get(name, 0)}" for name in table_names())
        elapsed = max(time.monotonic() - self.started, 1e-9)
        text = f"{self.consumed} read, rows written: {rows}"
        if self.skipped:
            text += "; skipped " + ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items()))
            text += f"; dead-lettered {self.dead_lettered}"
        text += f"; lag {'?' if self.lag is None else self.lag}"
        return text + f"; {self.consumed / elapsed:.0f} msg/s over {elapsed:.0f} s"
