"""Array aliases shared by the analytics core."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
"""A float64 vector or matrix."""

ArrayLike: TypeAlias = npt.ArrayLike

IntArray: TypeAlias = npt.NDArray[np.int64]
"""An int64 array (counts)."""
