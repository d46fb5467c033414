"""Row kernels over logits: sparse (gathered label) and dense (target rows).

Every kernel takes validated, correctly typed 2-D arrays (any strides) and writes one
value per row; the wrappers in ``xent`` own every policy decision.  Per row, two
vectorised passes: the maximum ``m`` (an integer max over order-preserving bit keys,
which LLVM vectorises without ``nnan``), then ``s = sum exp(z - m)`` together with the
target statistics, so that ``logsumexp = m + log s`` is stable for logits of any size.
A row of up to ~100k float32 logits is still in L2 cache for the second pass, so memory
is streamed once.  Sums run in the input's precision over blocks of ``BLOCK`` elements
(vector lanes, so at most ``BLOCK / 8`` terms per partial) and in float64 across blocks.

Edge rules (tested in ``tests/test_extremes.py``):

* a ``-inf`` logit contributes ``exp(-inf) = 0``; where its target weight is 0 it adds
  nothing to the loss (``0 * -inf`` is never formed), where its weight is positive the
  loss is ``+inf``;
* a row of only ``-inf`` has no defined softmax: NaN;
* NaN anywhere in a row, or a ``+inf`` logit, gives NaN for that row (``inf - inf``).
"""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW
from ._math import as_type_of, fast_exp, from_ordered_bits, ordered_bits

#: Label value the wrappers use for rows that must not count (``ignore_class``).
IGNORED = -1
#: Elements summed in the input precision before a float64 accumulation.
BLOCK = 1024


@njit(**ROW)
def row_max(row):
    """Largest element of a 1-D row (+NaN wins; any NaN shows up in the next pass)."""
    k = ordered_bits(row[0])
    for j in range(1, row.shape[0]):
        b = ordered_bits(row[j])
        k = b if b > k else k
    return from_ordered_bits(k, row[0])


@njit(**ROW)
def _block_sum_exp(block, m):
    acc = as_type_of(0.0, m)
    for j in range(block.shape[0]):
        acc += fast_exp(block[j] - m)
    return np.float64(acc)


@njit(**ROW)
def row_sum_exp(row, m):
    """``sum exp(row - m)``, float64 result."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum_exp(row[q : q + BLOCK], m)
    return s


@njit(**ROW)
def _block_sum(block):
    acc = as_type_of(0.0, block[0])
    for j in range(block.shape[0]):
        acc += block[j]
    return np.float64(acc)


@njit(**ROW)
def row_sum(row):
    """``sum row``, float64 result."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum(row[q : q + BLOCK])
    return s


@njit(**ROW)
def row_lse_parts(row):
    """``(m, log s)`` with ``logsumexp(row) = m + log s``; ``log s`` is NaN for a row of
    only ``-inf`` (no softmax exists; ``z - m`` would be NaN anyway)."""
    m = row_max(row)
    log_s = np.log(row_sum_exp(row, m)) if m != -np.inf else np.nan
    return np.float64(m), log_s


@njit(**PARALLEL)
def sparse_logits(z, labels, smoothing, out_loss, out_lse):
    """Per-row sparse cross-entropy from logits.

    ``loss_i = (1 - eps) (lse_i - z[i, y_i]) + eps (lse_i - mean_c z[i, c])``; rows whose
    label is ``IGNORED`` get 0; a label outside ``[0, C)`` (never passed by the wrappers)
    gets NaN instead of reading outside the row.  ``out_lse`` of length N receives the
    log-sum-exp of each row; pass an empty array to skip it.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    for i in prange(n):
        row = z[i]
        m, log_s = row_lse_parts(row)
        if keep_lse:
            out_lse[i] = m + log_s
        y = labels[i]
        if y == IGNORED:
            out_loss[i] = 0.0
        elif y < 0 or y >= c:
            out_loss[i] = np.nan
        else:
            loss = log_s - (np.float64(row[y]) - m)
            if smoothing != 0.0:
                mean_shift = row_sum(row) / c - m
                loss = (1.0 - smoothing) * loss + smoothing * (log_s - mean_shift)
            out_loss[i] = loss


@njit(**ROW)
def _block_dense(block, tblock, m):
    """Block sums ``(exp(z - m), t, t (z - m) where t != 0)`` in the input precision."""
    zero = as_type_of(0.0, m)
    s = zero
    t_sum = zero
    tz = zero
    for j in range(block.shape[0]):
        d = block[j] - m
        t = as_type_of(tblock[j], m)
        s += fast_exp(d)
        t_sum += t
        tz += t * d if t != zero else zero
    return np.float64(s), np.float64(t_sum), np.float64(tz)


@njit(**PARALLEL)
def dense_logits(z, t, smoothing, out_loss, out_lse):
    """Per-row categorical cross-entropy from logits and target rows.

    With ``t' = (1 - eps) t + eps / C``: ``loss_i = sum_c t'_c (lse_i - z_c)``, computed as
    ``(1 - eps) (T log s - sum t (z - m)) + eps (log s - mean (z - m))`` with
    ``T = sum t``, so that large logits do not cancel.  One fused pass after the max:
    no N x C temporary.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    for i in prange(n):
        row = z[i]
        trow = t[i]
        m = row_max(row)
        s = 0.0
        t_sum = 0.0
        tz = 0.0
        for q in range(0, c, BLOCK):
            bs, bt, btz = _block_dense(row[q : q + BLOCK], trow[q : q + BLOCK], m)
            s += bs
            t_sum += bt
            tz += btz
        log_s = np.log(s) if m != -np.inf else np.nan
        m64 = np.float64(m)
        if keep_lse:
            out_lse[i] = m64 + log_s
        loss = t_sum * log_s - tz
        if smoothing != 0.0:
            mean_shift = row_sum(row) / c - m64
            loss = (1.0 - smoothing) * loss + smoothing * (log_s - mean_shift)
        out_loss[i] = loss
