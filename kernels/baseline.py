"""The bandwidth baseline: a plain parallel row sum, what the machine can stream.

Compiled with ``fastmath=True`` so LLVM may reorder and vectorise the float sum; no loss
kernel can read its input faster than this reads the same array.
"""

from numba import njit, prange

from ._half import widen


@njit(parallel=True, fastmath=True, cache=True)
def row_sums(x, out):
    """``out[i] = sum(x[i])`` for a 2-D array; returns ``out``."""
    for i in prange(x.shape[0]):
        s = 0.0
        row = x[i]
        for j in range(row.shape[0]):
            s += widen(row[j])
        out[i] = s
    return out
