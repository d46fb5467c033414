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
blocks of ``STREAM_BLOCK`` elements and in float64 across blocks, and so do the target sums, which
are recomputed in float64 throughout when a float32 block sum overflows (logits near the
float32 limit); the plain sum of logits (smoothing) runs in float64.

Streaming: compute as heavy as ``2**u`` per element keeps too few loads in flight for the
hardware prefetcher alone to reach the memory bandwidth, so the one-pass loops prefetch
``PREFETCH_AHEAD`` elements ahead in software, one ``STREAM_BLOCK`` at a time.

Edge rules (tested in ``tests/test_extremes.py``):

* a ``-inf`` logit contributes ``exp(-inf) = 0``; where its target weight is 0 it adds
  nothing to the loss (``0 * -inf`` is never formed), where its weight is positive the
  loss is ``+inf``;
* a row of only ``-inf`` has no defined softmax: NaN;
* NaN anywhere in a row, or a ``+inf`` logit, gives NaN for that row (``inf - inf``).
"""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW, SCALAR
from ._math import (
    as_type_of,
    fast_exp,
    fast_exp2,
    fast_log,
    from_ordered_bits,
    fast_tanh,
    ordered_bits,
    prefetch,
)

#: Label value the wrappers use for rows that must not count (``ignore_class``).
IGNORED = -1
#: Elements summed in the input precision before a float64 accumulation.
BLOCK = 1024
#: Leading elements whose maximum is the guessed shift.
GUESS = 16
#: Largest accepted sum of ``exp(z - M)`` for a guessed shift ``M`` (see module docstring).
ACCEPT = 2.0**24
#: The one-pass loops work in sub-blocks of ``STREAM_BLOCK`` elements and prefetch the
#: elements ``PREFETCH_AHEAD`` further on before each (measured on 100,000 x 1,000 to
#: 1,024 x 131,072 float32: 20-45% faster than relying on the hardware prefetcher alone;
#: 256/512 beat 128/512, 256/1024 and 512/1024).
STREAM_BLOCK = 256
PREFETCH_AHEAD = 512
_LOG2E = 1.4426950408889634


@njit(**SCALAR)
def prefetch_span(row, start, stop):
    """Prefetch the cache lines of ``row[start:stop]`` (clipped to the row)."""
    stop = min(stop, row.shape[0])
    step = max(1, 64 // row.itemsize)
    for j in range(start, stop, step):
        prefetch(row, j)


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
def stream_sum_exp2(row, shift):
    """``sum 2**((row - shift) log2 e)`` (float64), streamed with software prefetch."""
    s = 0.0
    prefetch_span(row, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        s += _block_sum_exp2(row[q : q + STREAM_BLOCK], shift)
    return s


@njit(**ROW)
def row_lse_parts(row, guess):
    """``(M, log s)`` with ``logsumexp(row) = M + log s``; ``guess`` must be a row element.

    One pass with ``M = guess`` when that is accepted, else the exact two-pass path with
    ``M = max(row)``.  ``log s`` is NaN for a row of only ``-inf`` (no softmax exists).
    """
    s = stream_sum_exp2(row, guess)
    if s <= ACCEPT:  # False for NaN
        return np.float64(guess), np.log(s)
    m = row_max(row)
    log_s = np.log(row_sum_exp(row, m)) if m != -np.inf else np.nan
    return np.float64(m), log_s


@njit(**ROW)
def guess_shift(row):
    """Max of the first ``GUESS`` elements: a cheap stand-in for the row maximum."""
    return row_max(row[:GUESS])


@njit(**ROW)
def _weighted_shift_sums(row, w, m):
    """``(sum w, sum w (z - M))`` in float64; a class of weight 0 adds nothing (even for a
    ``-inf`` logit, where ``0 * -inf`` would be NaN)."""
    w_sum = 0.0
    wz = 0.0
    for j in range(row.shape[0]):
        wj = w[j]
        w_sum += wj
        wz += wj * (np.float64(row[j]) - m) if wj != 0.0 else 0.0
    return w_sum, wz


@njit(**SCALAR)
def _sparse_row_loss(row, y, m, log_s, smoothing, w):
    """The sparse loss of one row from its ``(M, log s)``: IGNORED gives 0, a label outside
    the row NaN (never read).

    ``w`` holds class weights (float64, length C) or is empty: with weights the loss is
    ``(1 - eps) w_y (lse - z_y) + (eps / C) sum_c w_c (lse - z_c)`` (PyTorch's rule),
    without ``(1 - eps) (lse - z_y) + eps (lse - mean z)``.
    """
    c = row.shape[0]
    if y == IGNORED:
        return 0.0
    if y < 0 or y >= c:
        return np.nan
    loss = log_s - (np.float64(row[y]) - m)
    weighted = w.shape[0] == c
    if weighted:
        loss *= w[y]
    if smoothing != 0.0:
        if weighted:
            w_sum, wz = _weighted_shift_sums(row, w, m)
            smooth = (w_sum * log_s - wz) / c
        else:
            smooth = log_s - (row_sum(row) / c - m)
        loss = (1.0 - smoothing) * loss + smoothing * smooth
    return loss


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
        buf[j] = row[j]
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


#: Row chunks of the buffered kernels (one buffer each): enough to balance any thread
#: count, few enough that allocation does not matter.  (Asking Numba for the thread count
#: inside a kernel would make it uncachable.)
ROW_CHUNKS = 256


@njit(**SCALAR)
def _row_chunks(n):
    """Rows per chunk for the buffered kernels."""
    return max(1, (n + ROW_CHUNKS - 1) // ROW_CHUNKS)


@njit(**SCALAR)
def _sparse_guess(row, y):
    """The shift for a sparse row: the first elements' max, or the label's logit if larger
    (for a trained model the label's logit is usually the row's maximum)."""
    guess = guess_shift(row)
    if y >= 0 and y < row.shape[0]:
        zy = row[y]
        guess = zy if zy > guess else guess
    return guess


@njit(**SCALAR)
def _sparse_row(row, y, smoothing, w):
    """``(loss, lse)`` of one row of logits."""
    m, log_s = row_lse_parts(row, _sparse_guess(row, y))
    return _sparse_row_loss(row, y, m, log_s, smoothing, w), m + log_s


@njit(**PARALLEL)
def sparse_logits(z, labels, smoothing, class_weights, softcap, class_mask, out_loss, out_lse):
    """Per-row sparse cross-entropy from logits.

    ``loss_i = (1 - eps) (lse_i - z[i, y_i]) + eps (lse_i - mean_c z[i, c])``; with
    ``class_weights`` (float64, length C; empty for none) PyTorch's weighted form (see
    :func:`_sparse_row_loss`).  Rows whose label is ``IGNORED`` get 0; a label outside
    ``[0, C)`` (never passed by the wrappers) gets NaN instead of reading outside the row.
    ``softcap > 0`` replaces each logit by ``softcap tanh(z / softcap)`` first;
    ``class_mask`` (bool, N x C, any strides; shape (0, 0) for none) drops the classes
    where it is False from the normaliser.  ``out_lse`` of length N receives the
    log-sum-exp of each (transformed) row; pass an empty array to skip it.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    masked = class_mask.shape[0] == n
    if softcap == 0.0 and not masked:
        for i in prange(n):
            loss, lse = _sparse_row(z[i], labels[i], smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse
        return
    per = _row_chunks(n)
    for b in prange((n + per - 1) // per):
        buf = np.empty(c, z.dtype)
        for i in range(b * per, min(n, (b + 1) * per)):
            if masked:
                _cap_mask_row(z[i], class_mask[i], softcap, buf)
            else:
                _cap_row(z[i], softcap, buf)
            loss, lse = _sparse_row(buf, labels[i], smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse


# ------------------------------------------------------------ many short rows
#: Rows of at most this many classes take the row-block kernel.
SHORT_ROW = 16  # measured: 2x faster at C <= 10, even at 32, slower at 64
#: Elements per row block of the short-row kernel (rows x C, L1-resident).
ROW_BLOCK_ELEMENTS = 2048


@njit(**ROW)
def _exp2_inplace(values):
    """``values[k] = 2**(values[k] log2 e)``: one long vectorised loop over a row block."""
    log2e = as_type_of(_LOG2E, values[0])
    for k in range(values.shape[0]):
        values[k] = fast_exp2(values[k] * log2e)


@njit(**ROW)
def _shift_into(row, shift, out):
    for j in range(row.shape[0]):
        out[j] = row[j] - shift


@njit(**ROW)
def _segment_sums(values, c, out):
    """``out[i] = sum(values[i c : (i + 1) c])`` in float64."""
    for i in range(out.shape[0]):
        acc = 0.0
        for j in range(i * c, (i + 1) * c):
            acc += np.float64(values[j])
        out[i] = acc


@njit(**ROW)
def _log_inplace(values):
    for i in range(values.shape[0]):
        values[i] = fast_log(values[i])


@njit(**PARALLEL)
def sparse_logits_short_rows(z, labels, smoothing, class_weights, out_loss, out_lse):
    """:func:`sparse_logits` for many short rows (C <= ``SHORT_ROW``).

    Per-row loops of a few elements cost more than their arithmetic, so rows are taken in
    blocks of about ``ROW_BLOCK_ELEMENTS`` elements: each row is shifted by its label's logit
    (its first logit for an ignored row) into a block buffer, ``2**u`` runs as one long
    vectorised loop over the whole block, then come per-row sums and one vectorised log.  A
    row whose sum exceeds ``ACCEPT`` (its label's logit lies far below its maximum, or it
    holds NaN or inf) is recomputed on its own as in :func:`sparse_logits`.  No soft-cap or
    class mask here (the engine sends those to :func:`sparse_logits`).  Every row's
    result depends on that row only, so blocks, row order and thread count do not change it.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    rows_per_block = max(1, ROW_BLOCK_ELEMENTS // c)
    n_blocks = (n + rows_per_block - 1) // rows_per_block
    for b in prange(n_blocks):
        r0 = b * rows_per_block
        r1 = min(r0 + rows_per_block, n)
        terms = np.empty((r1 - r0) * c, z.dtype)
        shifts = np.empty(r1 - r0, z.dtype)
        for k in range(r1 - r0):
            row = z[r0 + k]
            y = labels[r0 + k]
            shifts[k] = row[y] if y >= 0 and y < c else row[0]
            _shift_into(row, shifts[k], terms[k * c : (k + 1) * c])
        _exp2_inplace(terms)
        sums = np.empty(r1 - r0)
        _segment_sums(terms, c, sums)
        logs = sums.copy()
        _log_inplace(logs)
        for k in range(r1 - r0):
            i = r0 + k
            row = z[i]
            y = labels[i]
            if sums[k] <= ACCEPT:  # False for NaN
                m, log_s = np.float64(shifts[k]), logs[k]
            else:
                m, log_s = row_lse_parts(row, _sparse_guess(row, y))
            if keep_lse:
                out_lse[i] = m + log_s
            out_loss[i] = _sparse_row_loss(row, y, m, log_s, smoothing, class_weights)


@njit(**ROW)
def _segment_sums_by_column(values, k0, c, out):
    """``out[r] = sum(values[k0 + r c : k0 + (r + 1) c])`` in float64, column by column so
    that the rows' additions pipeline (each row's order is still left to right)."""
    for r in range(out.shape[0]):
        out[r] = 0.0
    for j in range(c):
        for r in range(out.shape[0]):
            out[r] += np.float64(values[k0 + r * c + j])


@njit(**ROW)
def _targets_times(tflat, k0, d, out):
    """``out = t d`` where ``t != 0``, else 0 (never ``0 * -inf``)."""
    zero = as_type_of(0.0, d[0])
    for k in range(d.shape[0]):
        t = as_type_of(tflat[k0 + k], zero)
        out[k] = t * d[k] if t != zero else zero


@njit(**ROW)
def _log64_into(values, out):
    for r in range(values.shape[0]):
        out[r] = fast_log(values[r])


@njit(**ROW)
def _dense_short_losses(t_sum, log_s, tz, d_sum, c, smoothing, out):
    for r in range(t_sum.shape[0]):
        loss = t_sum[r] * log_s[r] - tz[r]
        if smoothing != 0.0:
            loss = (1.0 - smoothing) * loss + smoothing * (log_s[r] - d_sum[r] / c)
        out[r] = loss


@njit(**PARALLEL)
def dense_logits_short_rows(z, t, smoothing, out_loss, out_lse):
    """:func:`dense_logits` for many short rows (C <= ``SHORT_ROW``), C-contiguous ``z``
    and ``t`` (the engine checks), no class weights, soft-cap or mask.

    Rows are taken in blocks of about ``ROW_BLOCK_ELEMENTS`` elements, each row shifted by its
    first logit; ``t (z - M)``, ``2**u`` and the logs run as long vectorised loops over the
    block, the per-row sums column by column.  A row whose sum exceeds ``ACCEPT`` or whose
    sums are not finite (NaN, inf, a first logit far below the maximum) is recomputed on
    its own by :func:`_dense_row`.  Every row's result depends on that row only.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    flat = z.reshape(-1)
    tflat = t.reshape(-1)
    no_weights = np.empty(0, np.float64)
    rows_per_block = max(1, ROW_BLOCK_ELEMENTS // c)
    n_blocks = (n + rows_per_block - 1) // rows_per_block
    for b in prange(n_blocks):
        r0 = b * rows_per_block
        r1 = min(r0 + rows_per_block, n)
        nr = r1 - r0
        k0 = r0 * c
        shifts = np.empty(nr, z.dtype)
        d = np.empty(nr * c, z.dtype)
        for r in range(nr):
            shifts[r] = flat[k0 + r * c]
            _shift_into(flat[k0 + r * c : k0 + (r + 1) * c], shifts[r], d[r * c : (r + 1) * c])
        d_sum = np.empty(nr if smoothing != 0.0 else 0)
        if smoothing != 0.0:
            _segment_sums_by_column(d, 0, c, d_sum)
        td = np.empty(nr * c, z.dtype)
        _targets_times(tflat, k0, d, td)
        tz = np.empty(nr)
        t_sum = np.empty(nr)
        _segment_sums_by_column(td, 0, c, tz)
        _segment_sums_by_column(tflat, k0, c, t_sum)
        _exp2_inplace(d)
        s = np.empty(nr)
        _segment_sums_by_column(d, 0, c, s)
        log_s = np.empty(nr)
        _log64_into(s, log_s)
        _dense_short_losses(t_sum, log_s, tz, d_sum, c, smoothing, out_loss[r0:r1])
        for r in range(nr):
            i = r0 + r
            if s[r] <= ACCEPT and np.isfinite(t_sum[r]) and np.isfinite(tz[r]):  # NaN fails
                if keep_lse:
                    out_lse[i] = np.float64(shifts[r]) + log_s[r]
            else:
                loss, lse = _dense_row(z[i], t[i], smoothing, no_weights)
                out_loss[i] = loss
                if keep_lse:
                    out_lse[i] = lse


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
    prefetch_span(row, 0, PREFETCH_AHEAD)
    prefetch_span(trow, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        ahead = q + PREFETCH_AHEAD
        prefetch_span(row, ahead, ahead + STREAM_BLOCK)
        prefetch_span(trow, ahead, ahead + STREAM_BLOCK)
        bs, bt, btz = _block_dense(row[q : q + STREAM_BLOCK], trow[q : q + STREAM_BLOCK],
                                   shift, exact)
        s += bs
        t_sum += bt
        tz += btz
    return s, t_sum, tz


@njit(**SCALAR)
def _dense_row(row, trow, smoothing, w):
    """``(loss, lse)`` of one row of logits against one target row.

    With class weights ``w`` (non-empty) ``trow`` must already hold ``w t``: the smoothing
    term then becomes ``(eps / C) sum_c w_c (lse - z_c)``.
    """
    m = guess_shift(row)
    s, t_sum, tz = _dense_row_sums(row, trow, m, False)
    if not s <= ACCEPT:
        m = row_max(row)
        s, t_sum, tz = _dense_row_sums(row, trow, m, True)
    return _dense_row_finish(row, trow, smoothing, w, m, s, t_sum, tz)


@njit(**SCALAR)
def _dense_row_finish(row, trow, smoothing, w, m, s, t_sum, tz):
    """``(loss, lse)`` of a dense row from its sums relative to the shift ``m`` (shared by
    the per-row and the split-row kernels): the float64 rescue of overflowed target sums,
    then ``T log s - sum t (z - m)`` and the smoothing term."""
    c = row.shape[0]
    if not (np.isfinite(tz) and np.isfinite(t_sum)):
        t_sum, tz = _row_target_sums_f64(row, trow, m)
    log_s = np.log(s) if m != -np.inf else np.nan
    m64 = np.float64(m)
    loss = t_sum * log_s - tz
    if smoothing != 0.0:
        if w.shape[0] == c:
            w_sum, wz = _weighted_shift_sums(row, w, m64)
            smooth = (w_sum * log_s - wz) / c
        else:
            smooth = log_s - (row_sum(row) / c - m64)
        loss = (1.0 - smoothing) * loss + smoothing * smooth
    return loss, m64 + log_s


@njit(**ROW)
def _weigh_targets(trow, w, tbuf):
    """``tbuf = w t`` (``t`` where ``w`` is empty)."""
    weighted = w.shape[0] == trow.shape[0]
    for j in range(trow.shape[0]):
        t = np.float64(trow[j])
        tbuf[j] = t * w[j] if weighted else t


@njit(**ROW)
def _weigh_mask_targets(trow, w, keep, tbuf):
    """:func:`_weigh_targets`, then 0 where ``keep`` is False."""
    _weigh_targets(trow, w, tbuf)
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
    if softcap == 0.0 and not masked and class_weights.shape[0] == 0:
        for i in prange(n):
            loss, lse = _dense_row(z[i], t[i], smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse
        return
    per = _row_chunks(n)
    for b in prange((n + per - 1) // per):
        buf = np.empty(c, z.dtype)
        tbuf = np.empty(c, z.dtype)
        for i in range(b * per, min(n, (b + 1) * per)):
            if masked:
                _cap_mask_row(z[i], class_mask[i], softcap, buf)
                _weigh_mask_targets(t[i], class_weights, class_mask[i], tbuf)
            else:
                _cap_row(z[i], softcap, buf)
                _weigh_targets(t[i], class_weights, tbuf)
            loss, lse = _dense_row(buf, tbuf, smoothing, class_weights)
            out_loss[i] = loss
            if keep_lse:
                out_lse[i] = lse


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
    maxima = np.empty(ROW_PIECES, row.dtype)
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        maxima[p] = row_max(row[lo:hi]) if lo < hi else row[0]
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
        m, log_s = _split_lse_parts(row, _sparse_guess(row, y))
        out_loss[i] = _sparse_row_loss(row, y, m, log_s, smoothing, class_weights)
        if keep_lse:
            out_lse[i] = m + log_s


@njit(**PARALLEL)
def _split_dense_sums(row, trow, shift, exact):
    """:func:`_dense_row_sums` with the pieces on all threads, added in order."""
    c = row.shape[0]
    parts = np.zeros((ROW_PIECES, 3))
    for p in prange(ROW_PIECES):
        lo, hi = _piece(c, p)
        if lo < hi:
            a, b, d = _dense_row_sums(row[lo:hi], trow[lo:hi], shift, exact)
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
        loss, lse = _dense_row_finish(row, trow, smoothing, no_weights, m, s, t_sum, tz)
        out_loss[i] = loss
        if keep_lse:
            out_lse[i] = lse
