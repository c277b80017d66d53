"""Does the rebalancing pay? A backtest of the live policy on history, with costs.

The policy's decisions come from the replay engine (:mod:`streamfolio.replay`), the same
semantics the streaming job follows; this package adds what the replay does not say: what the
portfolio would have been worth. :mod:`~streamfolio.backtest.accounting` keeps the holdings bar
by bar, :mod:`~streamfolio.backtest.costs` the CSE's fees, :mod:`~streamfolio.backtest.data` the
split that keeps the future out of the initial state, :mod:`~streamfolio.backtest.strategies`
the schedules compared, :mod:`~streamfolio.backtest.run` one run (its records in
:mod:`~streamfolio.backtest.results`) and
:mod:`~streamfolio.backtest.sweep` a grid of policy parameters. The figures are those of
:mod:`streamfolio.core.performance`.
"""
