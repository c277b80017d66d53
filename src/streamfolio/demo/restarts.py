"""When the demo restarts a component that exited: exponential back-off, reset by a long run,
and a cap on restarts within a window past which the demo stops instead (:class:`RestartPolicy`).

Pure: the caller passes the clock's readings, so the policy is tested without processes.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["RestartPolicy"]


def _span(seconds: float) -> str:
    """``600`` → ``'10 min'``, ``90`` → ``'90 s'``.

    >>> _span(600), _span(90), _span(7200)
    ('10 min', '90 s', '120 min')
    """
    return f"{seconds / 60:g} min" if seconds >= 120 and seconds % 60 == 0 else f"{seconds:g} s"


@dataclass
class RestartPolicy:
    """Decides how long to wait before restarting a component that exited, or to give up.

    The delay doubles with each exit that follows a short run (``first_delay_s``, twice that,
    ... capped at ``max_delay_s``); a run of at least ``reset_after_s`` resets it, so a
    component that fails once a day always comes back after ``first_delay_s``. More than
    ``max_restarts`` restarts within ``window_s`` means restarting does not help: the caller
    stops (:meth:`after_exit` returns None, :attr:`limit` says why).

    >>> policy = RestartPolicy(max_restarts=3, window_s=600)
    >>> [policy.after_exit(started_at=t, exited_at=t + 5) for t in (0, 10, 20)]
    [1.0, 2.0, 4.0]
    >>> policy.after_exit(started_at=30, exited_at=35) is None  # a 4th restart within 10 min
    True
    >>> policy.limit
    'more than 3 restarts within 10 min'
    >>> later = RestartPolicy()
    >>> later.after_exit(0, 5), later.after_exit(6, 8), later.after_exit(12, 200)  # ran 188 s
    (1.0, 2.0, 1.0)
    """

    first_delay_s: float = 1.0
    max_delay_s: float = 60.0
    reset_after_s: float = 120.0
    max_restarts: int = 5
    window_s: float = 600.0
    _quick_exits: int = field(default=0, init=False, repr=False)
    _restarts: deque[float] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.first_delay_s < 0 or self.max_delay_s < self.first_delay_s:
            raise ValueError("delays: 0 <= first_delay_s <= max_delay_s")
        if self.max_restarts < 0 or self.window_s <= 0:
            raise ValueError("max_restarts >= 0 and window_s > 0")

    @property
    def limit(self) -> str:
        """The cap, in words: why :meth:`after_exit` gave up."""
        return f"more than {self.max_restarts} restarts within {_span(self.window_s)}"

    def recent_restarts(self, now: float) -> int:
        """Restarts decided within the window that ends at ``now``."""
        while self._restarts and self._restarts[0] <= now - self.window_s:
            self._restarts.popleft()
        return len(self._restarts)

    def after_exit(
        self, started_at: float, exited_at: float, *, counted: bool = True
    ) -> float | None:
        """Seconds to wait before restarting a component that ran from ``started_at`` until
        ``exited_at`` (one monotonic clock); None: the cap is reached, stop instead.

        ``counted`` False (the broker is unreachable, which a restart cannot fix and the
        component waits out) backs off all the same but does not count towards the cap.

        >>> RestartPolicy(max_delay_s=5).after_exit(0, 1) is not None
        True
        >>> capped = RestartPolicy(max_delay_s=5, max_restarts=10)
        >>> [capped.after_exit(t, t) for t in range(6)]
        [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
        >>> RestartPolicy(max_restarts=0).after_exit(0, 1) is None
        True
        >>> RestartPolicy(max_restarts=0).after_exit(0, 1, counted=False)
        1.0
        """
        if exited_at - started_at >= self.reset_after_s:
            self._quick_exits = 0
        if counted:
            if self.recent_restarts(exited_at) >= self.max_restarts:
                return None
            self._restarts.append(exited_at)
        # 2 ** n overflows a float long before it matters: stop doubling once capped.
        delay = self.first_delay_s * 2.0 ** min(self._quick_exits, 62)
        self._quick_exits += 1
        return float(min(delay, self.max_delay_s))
