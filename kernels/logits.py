"""Row kernels over logits: sparse (gathered label) and dense (target rows).

Every kernel takes validated, correctly typed 2-D arrays (any strides) and writes one
value per row; the wrappers in ``xent`` own every policy decision.

Log-sum-exp in one pass.  ``lse = M + log sum exp(z - M)`` holds for any shift ``M``; the
usual choice, the row maximum, costs a second pass.  The kernels instead take ``M`` from a
few elements they read anyway (the first ``GUESS`` elements, and for the sparse loss the
label's logit) and sum ``2**((z - M) log2 e)`` in one vectorised pass.  Because ``M`` is an
element of the row, the sum is at least 1; if it exceeds ``ACCEPT`` (the guess may lie far
below the maximum, or the row holds NaN or inf) the row is recomputed exactly with the
true maximum (an integer max over order-preserving bit keys, which LLVM vectorises
without ``nnan``).  A term's rounding error is ``|u| ln 2`` epsilons relative, as on the
exact path, where ``u`` is its distance below the maximum; a guessed shift can add positive
``u`` up to ``log2 ACCEPT = 24``: at most 1e-6 extra relative error of the sum in float32
(about one ulp of a log-sum-exp near 10), 4e-15 in float64, and only when the guess
is poor (for trained models the label's logit usually is the maximum).  The targets' sums are taken relative to the same ``M``, so large logits never
cancel.  The sum of exponentials (terms at most ``ACCEPT``) runs in the input precision over
blocks of ``BLOCK`` elements and in float64 across blocks, and so do the target sums, which
are recomputed in float64 throughout when a float32 block sum overflows (logits near the
float32 limit); the plain sum of logits (smoothing) runs in float64.

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
from ._math import as_type_of, fast_exp, fast_exp2, from_ordered_bits, ordered_bits

#: Label value the wrappers use for rows that must not count (``ignore_class``).
IGNORED = -1
#: Elements summed in the input precision before a float64 accumulation.
BLOCK = 1024
#: Leading elements whose maximum is the guessed shift.
GUESS = 16
#: Largest accepted sum of ``exp(z - M)`` for a guessed shift ``M`` (see module docstring).
ACCEPT = 2.0**24
_LOG2E = 1.4426950408889634


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
    """``sum exp(row - m)`` with the full-range exp, float64 result (the exact path)."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum_exp(row[q : q + BLOCK], m)
    return s


@njit(**ROW)
def _block_sum_exp2(block, shift):
    log2e = as_type_of(_LOG2E, shift)
    acc = as_type_of(0.0, shift)
    for j in range(block.shape[0]):
        acc += fast_exp2((block[j] - shift) * log2e)
    return np.float64(acc)


@njit(**ROW)
def _block_sum(block):
    acc = 0.0  # float64: a float32 row of logits near 1e38 must not overflow its sum
    for j in range(block.shape[0]):
        acc += np.float64(block[j])
    return acc


@njit(**ROW)
def row_sum(row):
    """``sum row`` accumulated in float64."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum(row[q : q + BLOCK])
    return s


@njit(**ROW)
def row_lse_parts(row, guess):
    """``(M, log s)`` with ``logsumexp(row) = M + log s``; ``guess`` must be a row element.

    One pass with ``M = guess`` when that is accepted, else the exact two-pass path with
    ``M = max(row)``.  ``log s`` is NaN for a row of only ``-inf`` (no softmax exists).
    """
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum_exp2(row[q : q + BLOCK], guess)
    if s <= ACCEPT:  # False for NaN
        return np.float64(guess), np.log(s)
    m = row_max(row)
    log_s = np.log(row_sum_exp(row, m)) if m != -np.inf else np.nan
    return np.float64(m), log_s


@njit(**ROW)
def guess_shift(row):
    """Max of the first ``GUESS`` elements: a cheap stand-in for the row maximum."""
    return row_max(row[:GUESS])


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
        y = labels[i]
        label_ok = y >= 0 and y < c
        guess = guess_shift(row)
        if label_ok:
            zy = row[y]
            # the label's logit is usually the largest for a trained model
            guess = zy if zy > guess else guess
        m, log_s = row_lse_parts(row, guess)
        if keep_lse:
            out_lse[i] = m + log_s
        if y == IGNORED:
            out_loss[i] = 0.0
        elif not label_ok:
            out_loss[i] = np.nan
        else:
            loss = log_s - (np.float64(row[y]) - m)
            if smoothing != 0.0:
                mean_shift = row_sum(row) / c - m
                loss = (1.0 - smoothing) * loss + smoothing * (log_s - mean_shift)
            out_loss[i] = loss


@njit(**ROW)
def _block_dense(block, tblock, shift, exact):
    """Block sums ``(exp(z - M), t, t (z - M) where t != 0)`` in the input precision.

    ``exact`` selects the full-range exp (the fallback path) over the one-pass ``2**u``.
    """
    zero = as_type_of(0.0, shift)
    log2e = as_type_of(_LOG2E, shift)
    s = zero
    t_sum = zero
    tz = zero
    for j in range(block.shape[0]):
        d = block[j] - shift
        t = as_type_of(tblock[j], shift)
        s += fast_exp(d) if exact else fast_exp2(d * log2e)
        t_sum += t
        tz += t * d if t != zero else zero
    return np.float64(s), np.float64(t_sum), np.float64(tz)


@njit(**ROW)
def _row_target_sums_f64(row, trow, shift):
    """``(sum t, sum t (z - M))`` in float64 throughout: the rare rescue when the float32
    block sums overflowed (logits near the float32 limit)."""
    t_sum = 0.0
    tz = 0.0
    m = np.float64(shift)
    for j in range(row.shape[0]):
        t = np.float64(trow[j])
        t_sum += t
        tz += t * (np.float64(row[j]) - m) if t != 0.0 else 0.0
    return t_sum, tz


@njit(**ROW)
def _dense_row_sums(row, trow, shift, exact):
    s = 0.0
    t_sum = 0.0
    tz = 0.0
    for q in range(0, row.shape[0], BLOCK):
        bs, bt, btz = _block_dense(row[q : q + BLOCK], trow[q : q + BLOCK], shift, exact)
        s += bs
        t_sum += bt
        tz += btz
    return s, t_sum, tz


@njit(**PARALLEL)
def dense_logits(z, t, smoothing, out_loss, out_lse):
    """Per-row categorical cross-entropy from logits and target rows.

    With ``t' = (1 - eps) t + eps / C``: ``loss_i = sum_c t'_c (lse_i - z_c)``, computed as
    ``(1 - eps) (T log s - sum t (z - M)) + eps (log s - mean (z - M))`` with
    ``T = sum t`` and ``s = sum exp(z - M)``, so that large logits do not cancel.  One
    fused pass over logits and targets (two when the guessed shift is rejected): no
    N x C temporary.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    for i in prange(n):
        row = z[i]
        trow = t[i]
        m = guess_shift(row)
        s, t_sum, tz = _dense_row_sums(row, trow, m, False)
        if not s <= ACCEPT:
            m = row_max(row)
            s, t_sum, tz = _dense_row_sums(row, trow, m, True)
        if not (np.isfinite(tz) and np.isfinite(t_sum)):
            t_sum, tz = _row_target_sums_f64(row, trow, m)
        log_s = np.log(s) if m != -np.inf else np.nan
        m64 = np.float64(m)
        if keep_lse:
            out_lse[i] = m64 + log_s
        loss = t_sum * log_s - tz
        if smoothing != 0.0:
            mean_shift = row_sum(row) / c - m64
            loss = (1.0 - smoothing) * loss + smoothing * (log_s - mean_shift)
        out_loss[i] = loss
