"""The estimators' symmetric matrix from its upper triangle: the bits of triu(u) + triu(u, 1).T."""

from __future__ import annotations

import numpy as np
import pytest

from streamfolio.core.moments.estimators import _symmetric


def reference(upper: np.ndarray) -> np.ndarray:
    u = np.triu(upper)
    result: np.ndarray = u + np.triu(u, 1).T
    return result


@pytest.mark.parametrize("seed", range(5))
def test_the_same_bits_and_layout_as_the_sum_of_triangles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for n in range(1, 25):
        a = rng.normal(size=(n, n))
        a[rng.random((n, n)) < 0.2] = -0.0  # the sum turns -0.0 into 0.0: so must this
        a[rng.random((n, n)) < 0.05] = np.nan
        for upper in (a, np.asfortranarray(a)):
            got, want = _symmetric(upper), reference(upper)
            assert got.tobytes() == want.tobytes()
            assert got.flags.c_contiguous == want.flags.c_contiguous
            assert got is not upper
