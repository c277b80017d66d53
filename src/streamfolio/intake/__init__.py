"""What a component accepts from a topic: each message's decoding, rules and dead letter, once.

Every consumer reads through :class:`Intake` (the streaming job, the rebalancer and its memory,
the store, the dashboard, the tools), so a rule is written here once and enforced everywhere.
A record is accepted in three steps, each with its machine-readable reason when it fails:

1. ``undecodable``: the bytes are not a record of the topic's Avro schema (truncated, another
   schema, trailing bytes).
2. ``invalid``: the record breaks its message's own rules (:mod:`streamfolio.messages`: NaN or
   infinite numbers, a non-positive price, an asymmetric covariance, a time outside 1970..9999);
   ``invalid_stats``, ``invalid_weights``, ``invalid_metrics``, ``invalid_event`` for those.
3. The component's rules, which need its configuration and clock: ``future`` (stamped further
   than ``validation.max_future_skew_ms`` ahead of the wall clock), ``key_mismatch`` (the Kafka
   key is not the portfolio id in the value), ``unknown_portfolio``, and the portfolio's fit:
   ``invalid_stats`` (not exactly its tickers, estimator and bar size; not positive
   semi-definite; a count above ``validation.max_stats_count``) and ``invalid_weights`` (not
   exactly its tickers, not summing to 1, outside its bounds).

A refusal is a :class:`Rejected` exception; :meth:`Rejected.dead_letter` builds the record for
the dead-letter topic. What a consumer does later with an accepted message (a replayed, older
record: ``stale``) is the consumer's rule, in :mod:`streamfolio.core.portfolio`.

The package: :mod:`~streamfolio.intake.reader` (:class:`Intake`, :class:`Rejected`,
:data:`REASONS`) and :mod:`~streamfolio.intake.rules` (a message's fit to its portfolio:
:func:`stats_problem`, :func:`weights_problem`, :func:`control_problem`, :data:`CONTROL_RANK`);
import from here.

>>> from streamfolio.core.portfolio import PortfolioSpec
>>> from streamfolio.messages import Weights
>>> from streamfolio.serde import codec_for
>>> spec = PortfolioSpec("p1", ("ATW", "IAM"), bar_ms=60_000, periods_per_year=92_000)
>>> intake = Intake({"p1": spec}, clock=lambda: 1_750_000_000_000)
>>> value = codec_for("Weights").encode(Weights("p1", 1_750_000_000_000,
...                                             {"ATW": 5.0, "IAM": -4.0}).to_record())
>>> try:
...     intake.weights(value, key=b"p1")
... except Rejected as refused:
...     print(refused.reason, "-", refused.detail)
invalid_weights - p1 weights: weight of ATW is 5, outside its bounds [0, 1]
"""

from __future__ import annotations

from streamfolio.intake.reader import (
    DEFAULT_MAX_FUTURE_SKEW_MS,
    DETAIL_LIMIT,
    REASONS,
    Intake,
    PriceFormat,
    Rejected,
)
from streamfolio.intake.rules import (
    CONTROL_RANK,
    DEFAULT_COVARIANCE_TOLERANCE,
    DEFAULT_MAX_STATS_COUNT,
    ControlKind,
    control_problem,
    stats_problem,
    weights_problem,
)

__all__ = [
    "CONTROL_RANK",
    "DEFAULT_COVARIANCE_TOLERANCE",
    "DEFAULT_MAX_FUTURE_SKEW_MS",
    "DEFAULT_MAX_STATS_COUNT",
    "DETAIL_LIMIT",
    "REASONS",
    "ControlKind",
    "Intake",
    "PriceFormat",
    "Rejected",
    "control_problem",
    "stats_problem",
    "weights_problem",
]
