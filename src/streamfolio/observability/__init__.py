"""Operating streamfolio like the rest of the stack: Prometheus metrics and JSON log lines.

* :mod:`~streamfolio.observability.metrics`: each long-running component's counters and
  histograms, in a registry of its own, and
  :func:`~streamfolio.observability.metrics.serve_metrics`,
  which exposes one on a local port for Prometheus (off unless a port is given).
* :mod:`~streamfolio.observability.logs`: ``--log-format json``, one JSON object per line with
  time, level, logger, message and the record's portfolio id, topic, partition and offset.
"""

from __future__ import annotations
