"""The rebalancer: closes the loop from metrics back to weights (SEMANTICS §7).

* :mod:`~streamfolio.rebalancer.service`: :class:`~.service.RebalancerService`, the loop and its
  wiring (consume-decide-produce in Kafka transactions);
* :mod:`~streamfolio.rebalancer.decider`: :class:`~.decider.Decider`, the logic, without Kafka;
* :mod:`~streamfolio.rebalancer.join`: metrics records waiting for the statistics they name;
* :mod:`~streamfolio.rebalancer.batch`: what each record read leads to, staged until it commits;
* :mod:`~streamfolio.rebalancer.transactions`: the transactional producer and committed offsets;
* :mod:`~streamfolio.rebalancer.memory`: what it remembers of each portfolio;
* :mod:`~streamfolio.rebalancer.follower`: rebuilding that memory from its output topics;
* :mod:`~streamfolio.rebalancer.notify`: telling portfolio owners, through apprise;
* :mod:`~streamfolio.rebalancer.cli`: the ``streamfolio rebalancer`` command.

Nothing is imported here, so ``import streamfolio.rebalancer.notify`` stays light.
"""
