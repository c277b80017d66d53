"""When the demo restarts a component: back-off, its reset after a long run, and the cap past
which it stops instead (issue #13, item 3). Pure: no processes, no broker."""

from __future__ import annotations

import pytest

from streamfolio.demo import RestartPolicy


def _quick_exits(policy: RestartPolicy, count: int, every_s: float = 1.0) -> list[float | None]:
    """``count`` runs of half a second, one every ``every_s`` seconds."""
    return [policy.after_exit(i * every_s, i * every_s + 0.5) for i in range(count)]


def test_the_delay_doubles_after_each_quick_exit_up_to_the_maximum() -> None:
    policy = RestartPolicy(max_restarts=100)
    assert _quick_exits(policy, 9) == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]


def test_a_long_run_resets_the_back_off() -> None:
    policy = RestartPolicy(max_restarts=100, window_s=10)
    assert _quick_exits(policy, 4, every_s=100) == [1.0, 2.0, 4.0, 8.0]
    # Ran 2 minutes (reset_after_s) before exiting: back to the first delay, then doubling.
    assert policy.after_exit(1000, 1120) == 1.0
    assert policy.after_exit(1130, 1131) == 2.0
    # Just short of the reset: the back-off goes on.
    assert policy.after_exit(1200, 1319) == 4.0


def test_more_restarts_than_the_cap_within_the_window_give_up() -> None:
    policy = RestartPolicy()  # 5 restarts within 10 minutes
    assert None not in _quick_exits(policy, 5, every_s=10)
    assert policy.recent_restarts(45) == 5
    assert policy.after_exit(50, 51) is None
    assert policy.limit == "more than 5 restarts within 10 min"


def test_restarts_older_than_the_window_do_not_count() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=60, reset_after_s=1000)
    assert policy.after_exit(0, 1) == 1.0
    assert policy.after_exit(2, 30) == 2.0
    assert policy.after_exit(31, 50) is None  # a 3rd within a minute
    # A minute after the first restart, it no longer counts: one more is allowed.
    assert policy.recent_restarts(61.5) == 1
    assert policy.after_exit(60, 61.5) == 4.0


def test_nonsense_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="delays"):
        RestartPolicy(first_delay_s=10, max_delay_s=1)
    with pytest.raises(ValueError, match="window_s"):
        RestartPolicy(window_s=0)
