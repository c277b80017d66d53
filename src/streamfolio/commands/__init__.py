"""The top-level ``streamfolio`` commands, one module per area; :mod:`streamfolio.cli` registers
them on the app. ``state``: init and simulate; ``replay``: the offline analytics; ``feed``: the
price feeds and fetch-history; ``topic``: tail and produce; ``demo``: the whole loop. The
commands of the services live beside them (``kafka/cli.py``, ``flink/cli.py``, ``store/cli.py``,
``rebalancer/cli.py``, ``dashboard/cli.py``).
"""
