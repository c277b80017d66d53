"""The live web dashboard: ``streamfolio dashboard``.

* :mod:`~streamfolio.dashboard.state`: bounded per-portfolio histories and pipeline health,
  folded from decoded records (pure: no Kafka, no web), made of
  :mod:`~streamfolio.dashboard.view` (one portfolio's histories and JSON),
  :mod:`~streamfolio.dashboard.bounds` (topic roles, size bounds, the history window) and
  :mod:`~streamfolio.dashboard.health` (counters, lag, dead letters, rates);
* :mod:`~streamfolio.dashboard.consumer`: the background thread that reads the topics into it;
* :mod:`~streamfolio.dashboard.app`: the Starlette app (JSON snapshots, server-sent events, the
  static page) and the uvicorn server around it, behind the Host allow-list, security headers
  and strict parameter parsing of :mod:`~streamfolio.dashboard.security`;
* :mod:`~streamfolio.dashboard.cli`: the typer command;
* ``static/``: the page, its script and style, and ECharts (``static/vendor/``, see its README).

The web dependencies (starlette, uvicorn) are the ``dashboard`` extra, imported only by ``app``
and ``security``.
"""

from __future__ import annotations

__all__: list[str] = []
