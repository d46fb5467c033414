"""Row kernels over probabilities: sparse (direct index gather) and dense (target rows).

Keras semantics, per row: ``q = p / sum(p)`` (skipped when ``renormalize`` is false),
``q`` clipped to ``[lo, hi]`` (``lo = eps``, ``hi = 1 - eps`` in the input precision),
then ``-sum_c t'_c log q_c``.  With ``renormalize`` false and no smoothing, the sparse
kernel reads exactly one element per row: ``p[i, y_i]``.
"""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW, SCALAR
from ._half import widen
from ._math import as_type_of, fast_log
from .stream import BLOCK, IGNORED, PREFETCH_AHEAD, STREAM_BLOCK, prefetch_span, row_sum


@njit(**ROW)
def clip(q, lo, hi):
    q = lo if q < lo else q  # NaN passes through both
    return hi if q > hi else q


@njit(**ROW)
def _renormalised(p, scale, total):
    """``p / total`` as ``p * scale`` (``scale = 1 / total``; a division per element costs
    more than the log), dividing only when ``scale`` overflowed: a subnormal row sum, where
    ``0 * inf`` would give NaN and Keras's division gives 0."""
    return p / total if scale == as_type_of(np.inf, scale) else p * scale


@njit(**ROW)
def _block_sum_log_clipped(block, scale, total, lo, hi):
    """``sum_c log q_c`` over a block, ``q`` the renormalised, clipped row."""
    acc = as_type_of(0.0, lo)
    for j in range(block.shape[0]):
        acc += fast_log(clip(_renormalised(widen(block[j]), scale, total), lo, hi))
    return np.float64(acc)


@njit(**ROW)
def row_total(row, renormalize):
    """The row's divisor in the input precision (1 when not renormalising)."""
    like = widen(row[0])
    if renormalize:
        return as_type_of(row_sum(row), like)
    return as_type_of(1.0, like)


@njit(**PARALLEL)
def sparse_probs(p, labels, smoothing, lo, hi, renormalize, out_loss):
    """Per-row sparse cross-entropy from probabilities by direct index gather.

    ``loss_i = -(1 - eps) log q[i, y_i] - (eps / C) sum_c log q[i, c]`` with ``q`` the
    renormalised, clipped row.  ``IGNORED`` rows give 0 and are not read; a label outside
    ``[0, C)`` gives NaN without reading.
    """
    n, c = p.shape
    for i in prange(n):
        y = labels[i]
        if y == IGNORED:
            out_loss[i] = 0.0
            continue
        if y < 0 or y >= c:
            out_loss[i] = np.nan
            continue
        row = p[i]
        total = row_total(row, renormalize)
        loss = -np.log(np.float64(clip(widen(row[y]) / total, lo, hi)))
        if smoothing != 0.0:
            # multiply by the reciprocal in the loop: a division per element costs more
            # than the log (within 1.5 ulp of p / total)
            inv_total = as_type_of(1.0, total) / total
            logs = 0.0
            for q in range(0, c, STREAM_BLOCK):
                prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
                logs += _block_sum_log_clipped(row[q : q + STREAM_BLOCK], inv_total, total, lo, hi)
            loss = (1.0 - smoothing) * loss - (smoothing / c) * logs
        out_loss[i] = loss


#: Targets are scanned in pieces of this many elements; without smoothing, the logs of a piece
#: whose targets are all 0 are never taken (their terms are 0 whatever the log).
TARGET_PIECE = 64


@njit(**ROW)
def _piece_dense_probs(block, tblock, scale, total, lo, hi, keep, spread):
    """``sum_c t'_c log q_c`` over a piece, ``t' = keep * t + spread``; t' = 0 terms add 0
    (never ``0 * log q``); ``q`` the renormalised, clipped row."""
    zero = as_type_of(0.0, lo)
    acc = zero
    for j in range(block.shape[0]):
        w = keep * as_type_of(widen(tblock[j]), lo) + spread
        lq = fast_log(clip(_renormalised(widen(block[j]), scale, total), lo, hi))
        acc += w * lq if w != zero else zero
    return acc


@njit(**ROW)
def _count_nonzero(tblock):
    """Targets of a piece that are not 0 (NaN counts): one vectorised compare-and-add."""
    n = 0
    for j in range(tblock.shape[0]):
        n += 1 if widen(tblock[j]) != 0 else 0
    return n


@njit(**ROW)
def _block_dense_probs(block, tblock, scale, total, lo, hi, keep, spread):
    """``sum_c t'_c log q_c`` over a block (float64 result).  Without smoothing (``spread ==
    0``) only pieces holding a non-zero target take their logs: one-hot and sparse soft targets
    then cost a compare per element instead of a log (the log bound this loop before)."""
    if spread != as_type_of(0.0, spread):
        return np.float64(_piece_dense_probs(block, tblock, scale, total, lo, hi, keep, spread))
    acc = 0.0
    for q in range(0, block.shape[0], TARGET_PIECE):
        tpiece = tblock[q : q + TARGET_PIECE]
        if _count_nonzero(tpiece) != 0:
            piece = block[q : q + TARGET_PIECE]
            acc += _piece_dense_probs(piece, tpiece, scale, total, lo, hi, keep, spread)
    return acc


@njit(**SCALAR)
def dense_probs_row(row, trow, smoothing, lo, hi, renormalize):
    """``-sum_c t'_c log q_c`` of one row (see :func:`dense_probs`)."""
    c = row.shape[0]
    total = row_total(row, renormalize)
    inv_total = as_type_of(1.0, total) / total  # see sparse_probs
    keep = as_type_of(1.0 - smoothing, lo)
    spread = as_type_of(smoothing / c, lo)
    acc = 0.0
    prefetch_span(trow, 0, PREFETCH_AHEAD)  # the row itself was just read by its sum
    for q in range(0, c, STREAM_BLOCK):
        prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        prefetch_span(trow, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        acc += _block_dense_probs(
            row[q : q + STREAM_BLOCK],
            trow[q : q + STREAM_BLOCK],
            inv_total,
            total,
            lo,
            hi,
            keep,
            spread,
        )
    return -acc


@njit(**PARALLEL)
def dense_probs(p, t, smoothing, lo, hi, renormalize, out_loss):
    """Per-row categorical cross-entropy from probabilities and target rows.

    ``loss_i = -sum_c t'_c log q[i, c]``, ``t' = (1 - eps) t + eps / C``, ``q`` the
    renormalised, clipped row; fused in one pass after the row sum (no N x C temporary).
    """
    n = p.shape[0]
    for i in prange(n):
        out_loss[i] = dense_probs_row(p[i], t[i], smoothing, lo, hi, renormalize)


@njit(**ROW)
def _block_check(block):
    """``(sum, number of elements outside [0, 1] or NaN)`` of a block."""
    zero = as_type_of(0.0, widen(block[0]))
    one = as_type_of(1.0, zero)
    s = zero
    bad = 0
    for j in range(block.shape[0]):
        x = widen(block[j])
        s += x
        bad += 0 if (x >= zero) & (x <= one) else 1  # NaN compares False: counted bad
    return np.float64(s), bad


@njit(**PARALLEL)
def probability_rows(p, out_sum, out_bad):
    """Row sums (float64) and per-row counts of entries outside ``[0, 1]`` (NaN included),
    in one pass: the checks scikit-learn makes on ``y_pred``, without three passes."""
    n, c = p.shape
    for i in prange(n):
        row = p[i]
        s = 0.0
        bad = 0
        for q in range(0, c, BLOCK):
            bs, bb = _block_check(row[q : q + BLOCK])
            s += bs
            bad += bb
        out_sum[i] = s
        out_bad[i] = bad
