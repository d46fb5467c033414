"""The bandwidth baseline: a plain parallel row sum, what the machine can stream.

Compiled with ``fastmath=True`` so LLVM may reorder and vectorise the float sum; no loss
kernel can read its input faster than this reads the same array.
"""

import numpy as np
from numba import njit, prange

from ._half import narrow, widen
from .stream import _block_sum_exp2


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


@njit(parallel=True, fastmath=True, cache=True)
def row_scale(x, out):
    """``out = x / 2`` row by row: the bandwidth baseline of a gradient, which reads the
    logits once and writes an array of their size (16-bit arrays as their bits)."""
    for i in prange(x.shape[0]):
        row = x[i]
        dst = out[i]
        for j in range(row.shape[0]):
            dst[j] = narrow(widen(row[j]) * np.float32(0.5), dst)
    return out


#: Elements of the cache-resident piece the exp floor re-reads (16 KiB of float32: L1-sized).
EXP_FLOOR_PIECE = 4096


@njit(parallel=True, cache=True)
def exp_floor(piece, repeats, out):
    """The compute baseline: ``out[k] = sum 2**((piece - piece[0]) log2 e)`` for each of
    ``repeats`` passes over one cache-resident ``piece`` (1-D), on all threads.

    ``repeats * len(piece)`` exps with no memory traffic: the time any kernel that takes one
    ``exp`` per element of an array of that many elements cannot beat with the package's
    fastest ``exp`` (the same ``2**u`` and flags the streaming loops use).
    """
    shift = widen(piece[0])
    for k in prange(repeats):
        out[k] = _block_sum_exp2(piece, shift)  # the streaming loops' own block sum
    return out
