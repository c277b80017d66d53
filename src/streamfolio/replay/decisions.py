"""What a portfolio emits after its state changed: metrics, then the policy's hold or rebalance.

The engine calls :func:`after_change` after every bar with statistics, every seed and every new
weights; a rebalance's events (:func:`rebalance_events`) have the fields of the
``RebalanceEvent`` and ``PortfolioWeights`` records the streaming side publishes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from streamfolio.core.policy import Hold, PolicyState, Rebalance, RebalancePolicy
from streamfolio.core.portfolio import PortfolioMonitor
from streamfolio.replay.records import ReplayEvent


def after_change(
    portfolio_id: str,
    monitor: PortfolioMonitor,
    policy: RebalancePolicy | None,
    policy_states: dict[str, PolicyState],
    now_ms: int,
) -> Iterator[ReplayEvent]:
    """What follows a change of ``monitor`` (a bar, a seed, new weights) at ``now_ms``.

    The metrics, if there are any; then, with a policy and weights, its decision: a ``hold``
    event when it says to notify, or a rebalance (:func:`rebalance_events`).
    ``policy_states[portfolio_id]`` is the policy's state, replaced by the new one.
    """
    metrics = monitor.metrics()
    if metrics is None:
        return
    yield ReplayEvent("metrics", portfolio_id, metrics)
    if policy is None or monitor.weights is None:
        return
    decision, policy_states[portfolio_id] = policy.decide(
        mean=monitor.moments.mean,
        covariance=monitor.moments.covariance,
        count=monitor.moments.n,
        weights=monitor.weights,
        now_ms=now_ms,
        state=policy_states[portfolio_id],
    )
    if isinstance(decision, Hold):
        if decision.notify:
            yield ReplayEvent(
                "hold",
                portfolio_id,
                {
                    "portfolio_id": portfolio_id,
                    "timestamp": now_ms,
                    "reason": decision.reason,
                    "sharpe": decision.sharpe,
                },
            )
        return
    yield from rebalance_events(portfolio_id, monitor, decision, now_ms)


def rebalance_events(
    portfolio_id: str, monitor: PortfolioMonitor, decision: Rebalance, now_ms: int
) -> Iterator[ReplayEvent]:
    """A rebalance: its ``rebalance`` event, the new ``weights`` (applied to ``monitor``), then
    the metrics under them."""
    assert monitor.weights is not None
    tickers = monitor.spec.tickers
    old = dict(zip(tickers, monitor.weights.tolist(), strict=True))
    new = dict(zip(tickers, np.asarray(decision.weights).tolist(), strict=True))
    yield ReplayEvent(
        "rebalance",
        portfolio_id,
        {
            "event_id": f"{portfolio_id}@{now_ms}",  # as RebalanceEvent.make_event_id
            "portfolio_id": portfolio_id,
            "timestamp": now_ms,
            "reason": decision.reason,
            "decision": "rebalance",
            "old_weights": old,
            "new_weights": new,
            "sharpe_before": decision.sharpe_before,
            "sharpe_after": decision.sharpe_after,
            "expected_return_after": decision.expected_return_after,
            "risk_after": decision.risk_after,
            "turnover": decision.turnover,
            "optimizer_status": decision.optimizer_status,
        },
    )
    weights_record = {
        "timestamp": now_ms,
        "portfolio_id": portfolio_id,
        "weights": new,
        "reason": decision.reason,
        "source": "rebalancer",
    }
    yield ReplayEvent("weights", portfolio_id, weights_record)
    problem = monitor.set_weights(new, timestamp_ms=now_ms)
    if problem is None:
        metrics = monitor.metrics()
        if metrics is not None:
            yield ReplayEvent("metrics", portfolio_id, metrics)
