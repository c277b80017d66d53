"""The rebalancer: closes the loop from metrics back to weights (SEMANTICS §7).

* :mod:`~streamfolio.rebalancer.service`: :class:`~.service.Decider` (the logic, without Kafka)
  and :class:`~.service.RebalancerService` (consume-decide-produce in Kafka transactions);
* :mod:`~streamfolio.rebalancer.memory`: what it remembers, rebuilt from its output topics;
* :mod:`~streamfolio.rebalancer.notify`: telling portfolio owners, through apprise;
* :mod:`~streamfolio.rebalancer.cli`: the ``streamfolio rebalancer`` command.

Nothing is imported here, so ``import streamfolio.rebalancer.notify`` stays light.
"""
