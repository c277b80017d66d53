"""The streaming job: Kafka price ticks → bars → per-portfolio statistics and metrics → Kafka.

* :mod:`streamfolio.flink.job` wires the PyFlink DataStream graph (``build_pipeline``) and runs
  it (``main``);
* :mod:`streamfolio.flink.operators` holds the thin Flink functions over the analytics core;
* :mod:`streamfolio.flink.connectors` builds the Kafka sources and sinks and finds the jars;
* :mod:`streamfolio.flink.runtime` configures the environment (thread mode, checkpoints, state
  backend, restart strategy, resuming from a retained checkpoint);
* :mod:`streamfolio.flink.cli` is ``streamfolio job run | submit``.

Importing this package does not import PyFlink; its modules do.
"""
