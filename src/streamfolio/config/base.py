"""The shared ground of the settings models: the strict frozen base model, the constrained number
types, the name patterns, and :func:`invalid`, the one way a validator reports a problem.

A validator raises ``invalid(message, fix, subkey)``; pydantic carries the fix and the sub-path in
the error's context, and :mod:`streamfolio.config.errors` reads them back into a
:class:`~streamfolio.errors.ConfigError`.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

CONFIG_ENV = "STREAMFOLIO_CONFIG"
"""The environment variable naming the configuration file when none is given."""
EXAMPLE = "examples/cse.yaml"
"""The example that documents every key; error messages point to it."""
WEIGHT_TOLERANCE = 1e-6
"""Weights must sum to 1 within this (``SEMANTICS.md`` §6)."""

TICKER = re.compile(r"[A-Z0-9][A-Z0-9.\-]{0,11}")
PORTFOLIO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")

Positive = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]


def invalid(message: str, fix: str, subkey: str = "") -> PydanticCustomError:
    """The error a validator raises: ``message``, how to ``fix`` it, and the ``subkey`` below the
    validated field it concerns (``"[2]"``, ``"weights.ATW"``), if any."""
    # The fix and the sub-path ride in the error's context; errors.config_error reads them back.
    return PydanticCustomError("streamfolio", message, {"fix": fix, "subkey": subkey})


class StrictModel(BaseModel):
    """A settings model: frozen, no unknown keys, no infinities or NaNs."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
