"""streamfolio: real-time portfolio optimisation over streaming market data."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
