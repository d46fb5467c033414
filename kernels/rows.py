"""Per-row kernels over logits: sparse (gathered label) and dense (target rows), one row per
thread at a time, with class weights, smoothing, soft-capping and class masks."""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW, SCALAR
from ._half import widen, work_empty
from ._math import (
    as_type_of,
    fast_tanh,
)
from .stream import (
    ACCEPT,
    dense_row_finish,
    dense_row_sums,
    guess_shift,
    prefetch_guess,
    row_lse_exact,
    row_lse_parts,
    row_max,
    sparse_guess,
    sparse_row_loss,
    stream_sum_exp2,
)

# ------------------------------------------------------------ transformed rows
# Soft-capping and class masks change every element of a row before it enters the
# statistics.  Rather than branch inside the vectorised loops (which would slow the plain
# path), a transformed row is written to a per-thread buffer of C elements, L2-resident for
# vocabularies up to ~100k in float32, and the plain row code runs on the buffer: O(C) per
# thread of extra memory, never O(N C).


@njit(**ROW)
def _cap_row(row, cap, buf):
    """``buf = cap tanh(row / cap)`` (a copy when ``cap == 0``)."""
    # Copy first, transform in place: a plain copy streams from memory at full speed, while
    # a loop as heavy as tanh, reading memory directly, keeps too few loads in flight and
    # ran 4x slower (measured); the in-place pass then reads the buffer from L2.
    for j in range(row.shape[0]):
        buf[j] = widen(row[j])
    if cap != 0.0:
        # in the row's precision: float32 rows stay in 8-lane float32 vectors
        c = as_type_of(cap, buf[0])
        inv = as_type_of(1.0 / cap, buf[0])
        for j in range(buf.shape[0]):
            buf[j] = c * fast_tanh(buf[j] * inv)


@njit(**ROW)
def _cap_mask_row(row, keep, cap, buf):
    """:func:`_cap_row`, then ``-inf`` where ``keep`` is False: masked classes leave the
    normaliser (``exp(-inf) = 0``)."""
    _cap_row(row, cap, buf)
    minus_inf = as_type_of(-np.inf, buf[0])
    for j in range(row.shape[0]):
        buf[j] = buf[j] if keep[j] else minus_inf


#: Pieces of rows every parallel loop of the kernels runs over (``prange`` of at most this
#: many; a buffered kernel allocates one buffer per piece): enough to balance any thread
#: count, few enough that allocation and hand-out do not matter.  The engine hands them
#: to the threads one at a time (``_engine._balanced``); a ``prange`` over rows would be
#: handed out row by row (a row sum of 1,000,000 x 10 took 59x as long).  (Asking Numba
#: for the thread count inside a kernel would make it uncachable.)
ROW_CHUNKS = 256


@njit(**SCALAR)
def row_chunks(n):
    """Rows per chunk for the buffered kernels."""
    return max(1, (n + ROW_CHUNKS - 1) // ROW_CHUNKS)


@njit(**SCALAR)
def sparse_row(row, y, smoothing, w):
    """``(loss, lse)`` of one row of logits."""
    m, log_s = row_lse_parts(row, sparse_guess(row, y))
    return sparse_row_loss(row, y, m, log_s, smoothing, w), m + log_s


@njit(**PARALLEL)
def sparse_logits(z, labels, smoothing, class_weights, softcap, class_mask, out_loss, out_lse):
    """Per-row sparse cross-entropy from logits.

    ``loss_i = (1 - eps) (lse_i - z[i, y_i]) + eps (lse_i - mean_c z[i, c])``; with
    ``class_weights`` (float64, length C; empty for none) PyTorch's weighted form (see
    :func:`sparse_row_loss`).  Rows whose label is ``IGNORED`` get 0; a label outside
    ``[0, C)`` (never passed by the wrappers) gets NaN instead of reading outside the row.
    ``softcap > 0`` replaces each logit by ``softcap tanh(z / softcap)`` first;
    ``class_mask`` (bool, N x C, any strides; shape (0, 0) for none) drops the classes
    where it is False from the normaliser.  ``out_lse`` of length N receives the
    log-sum-exp of each (transformed) row; pass an empty array to skip it.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    masked = class_mask.shape[0] == n
    per = row_chunks(n)
    if softcap == 0.0 and not masked:
        for b in prange((n + per - 1) // per):
            for i in range(b * per, min(n, (b + 1) * per)):
                # sparse_row written out: through that call this loop ran 10% slower
                # (100,000 x 1,000 float32, AMD EPYC Zen 4; measured)
                prefetch_guess(z, labels, i + 1)
                row = z[i]
                y = labels[i]
                guess = sparse_guess(row, y)
                s = stream_sum_exp2(row, guess)
                if s <= ACCEPT:  # False for NaN
                    m, log_s = np.float64(guess), np.log(s)
                else:
                    m, log_s = row_lse_exact(row)  # rejected guess: the exact path
                out_loss[i] = sparse_row_loss(row, y, m, log_s, smoothing, class_weights)
                if keep_lse:
                    out_lse[i] = m + log_s
        return
    for b in prange((n + per - 1) // per):
        buf = work_empty(c, z)
        for i in range(b * per, min(n, (b + 1) * per)):
            if masked:
                _cap_mask_row(z[i], class_mask[i], softcap, buf)
            else:
                _cap_row(z[i], softcap, buf)
            loss, lse = sparse_row(buf, labels[i], smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse


@njit(**SCALAR)
def dense_row(row, trow, smoothing, w):
    """``(loss, lse)`` of one row of logits against one target row.

    With class weights ``w`` (non-empty) ``trow`` must already hold ``w t``: the smoothing
    term then becomes ``(eps / C) sum_c w_c (lse - z_c)``.
    """
    m = guess_shift(row)
    s, t_sum, tz = dense_row_sums(row, trow, m, False)
    if not s <= ACCEPT:
        m = row_max(row)
        s, t_sum, tz = dense_row_sums(row, trow, m, True)
    return dense_row_finish(row, trow, smoothing, w, m, s, t_sum, tz)


@njit(**ROW)
def weigh_targets(trow, w, tbuf):
    """``tbuf = w t`` (``t`` where ``w`` is empty)."""
    weighted = w.shape[0] == trow.shape[0]
    for j in range(trow.shape[0]):
        t = np.float64(widen(trow[j]))
        tbuf[j] = t * w[j] if weighted else t


@njit(**ROW)
def _weigh_mask_targets(trow, w, keep, tbuf):
    """:func:`weigh_targets`, then 0 where ``keep`` is False."""
    weigh_targets(trow, w, tbuf)
    for j in range(trow.shape[0]):
        tbuf[j] = tbuf[j] if keep[j] else 0.0


@njit(**PARALLEL)
def dense_logits(z, t, smoothing, class_weights, softcap, class_mask, out_loss, out_lse):
    """Per-row categorical cross-entropy from logits and target rows.

    With ``t' = (1 - eps) t + eps / C``: ``loss_i = sum_c t'_c (lse_i - z_c)``, computed as
    ``(1 - eps) (T log s - sum t (z - M)) + eps (log s - mean (z - M))`` with
    ``T = sum t`` and ``s = sum exp(z - M)``, so that large logits do not cancel.  One
    fused pass over logits and targets (two when the guessed shift is rejected): no
    N x C temporary.  ``class_weights`` (float64, length C; empty for none) gives
    PyTorch's ``sum_c w_c t'_c (lse - z_c)``; ``softcap`` and ``class_mask`` as in
    :func:`sparse_logits` (a masked class's target counts 0).
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    masked = class_mask.shape[0] == n
    per = row_chunks(n)
    if softcap == 0.0 and not masked and class_weights.shape[0] == 0:
        for b in prange((n + per - 1) // per):
            for i in range(b * per, min(n, (b + 1) * per)):
                loss, lse = dense_row(z[i], t[i], smoothing, class_weights)
                out_loss[i] = loss
                if keep_lse:
                    out_lse[i] = lse
        return
    for b in prange((n + per - 1) // per):
        buf = work_empty(c, z)
        tbuf = work_empty(c, z)
        for i in range(b * per, min(n, (b + 1) * per)):
            if masked:
                _cap_mask_row(z[i], class_mask[i], softcap, buf)
                _weigh_mask_targets(t[i], class_weights, class_mask[i], tbuf)
            else:
                _cap_row(z[i], softcap, buf)
                weigh_targets(t[i], class_weights, tbuf)
            loss, lse = dense_row(buf, tbuf, smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse
