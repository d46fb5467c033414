"""Few very long rows: each row split over all threads, pieces added in order."""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, SCALAR
from ._half import widen, work_empty
from .stream import (
    ACCEPT,
    dense_row_finish,
    dense_row_sums,
    guess_shift,
    row_max,
    row_sum_exp,
    sparse_guess,
    sparse_row_loss,
    stream_sum_exp2,
)

# ------------------------------------------------------------ few very long rows
#: A row is cut into this many pieces when there are fewer rows than threads.  The number
#: is fixed (not the thread count) and the pieces' sums are added in order, so results do
#: not depend on the number of threads.
ROW_PIECES = 16


@njit(**SCALAR)
def _piece(c, p):
    per = (c + ROW_PIECES - 1) // ROW_PIECES
    lo = min(c, p * per)
    return lo, min(c, lo + per)


@njit(**PARALLEL)
def _split_max(row):
    """:func:`row_max` over the pieces on all threads."""
    c = row.shape[0]
    maxima = work_empty(ROW_PIECES, row)
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        maxima[p] = row_max(row[lo:hi]) if lo < hi else widen(row[0])
    return row_max(maxima)


@njit(**PARALLEL)
def _split_lse_parts(row, guess):
    """:func:`row_lse_parts` with the row's pieces summed on all threads."""
    c = row.shape[0]
    sums = np.zeros(ROW_PIECES)
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        if lo < hi:
            sums[p] = stream_sum_exp2(row[lo:hi], guess)
    s = 0.0
    for p in range(ROW_PIECES):
        s += sums[p]
    if s <= ACCEPT:  # False for NaN
        return np.float64(guess), np.log(s)
    m = _split_max(row)
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        sums[p] = row_sum_exp(row[lo:hi], m) if lo < hi else 0.0
    s = 0.0
    for p in range(ROW_PIECES):
        s += sums[p]
    log_s = np.log(s) if m != -np.inf else np.nan
    return np.float64(m), log_s


@njit(**SCALAR)
def sparse_logits_long_rows(z, labels, smoothing, class_weights, out_loss, out_lse):
    """:func:`sparse_logits` for a few very long rows (fewer rows than threads): each row's
    sum of exponentials is split over all threads instead of one thread per row."""
    n = z.shape[0]
    keep_lse = out_lse.shape[0] == n
    for i in range(n):
        row = z[i]
        y = labels[i]
        m, log_s = _split_lse_parts(row, sparse_guess(row, y))
        out_loss[i] = sparse_row_loss(row, y, m, log_s, smoothing, class_weights)
        if keep_lse:
            out_lse[i] = m + log_s


@njit(**PARALLEL)
def _split_dense_sums(row, trow, shift, exact):
    """:func:`dense_row_sums` with the pieces on all threads, added in order."""
    c = row.shape[0]
    parts = np.zeros((ROW_PIECES, 3))
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        if lo < hi:
            a, b, d = dense_row_sums(row[lo:hi], trow[lo:hi], shift, exact)
            parts[p, 0] = a
            parts[p, 1] = b
            parts[p, 2] = d
    s = 0.0
    t_sum = 0.0
    tz = 0.0
    for p in range(ROW_PIECES):
        s += parts[p, 0]
        t_sum += parts[p, 1]
        tz += parts[p, 2]
    return s, t_sum, tz


@njit(**SCALAR)
def dense_logits_long_rows(z, t, smoothing, out_loss, out_lse):
    """:func:`dense_logits` (no class weights, soft-cap or mask) for a few very long rows,
    each split over all threads."""
    n = z.shape[0]
    keep_lse = out_lse.shape[0] == n
    no_weights = np.empty(0, np.float64)
    for i in range(n):
        row = z[i]
        trow = t[i]
        m = guess_shift(row)
        s, t_sum, tz = _split_dense_sums(row, trow, m, False)
        if not s <= ACCEPT:
            m = _split_max(row)
            s, t_sum, tz = _split_dense_sums(row, trow, m, True)
        loss, lse = dense_row_finish(row, trow, smoothing, no_weights, m, s, t_sum, tz)
        out_loss[i] = loss
        if keep_lse:
            out_lse[i] = lse
