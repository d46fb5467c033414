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
is poor (for trained models the label's logit usually is the maximum).  The targets' sums
are taken relative to the same ``M``, so large logits never cancel.  The sum of
exponentials (terms at most ``ACCEPT``) runs in the input precision over blocks of
``STREAM_BLOCK`` elements and in float64 across blocks, and so do the target sums, which are
recomputed in float64 throughout when a float32 block sum overflows (logits near the
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
    fast_log1p,
    fast_tanh,
    from_ordered_bits,
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
#: 256/512 beat 128/512, 256/1024 and 512/1024; re-measured later, 256/256 beat 256/512 on
#: 100,000 x 1,000 (sparse 70-74% vs 65-70% of the row sum, dense 107% vs 97%, dense
#: probabilities 64 vs 74 ms) and 128/128, 256/128, 512/512, 1024 and 2048 ahead, and was
#: level on the long rows).
STREAM_BLOCK = 256
PREFETCH_AHEAD = 256
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
# Per-row loops of a few elements cost more than their arithmetic (loop set-up, remainders,
# one scalar log per row), so rows of at most ``SHORT_ROW_BYTES`` are taken in blocks of
# ``SHORT_BLOCK`` rows and *turned*: the block is copied column by column into a buffer
# ``(C, rows)``, so consecutive rows fill the SIMD lanes.  Every statistic is then a
# vectorised loop over rows, repeated for each class: the row maximum, the sum of ``exp``
# relative to it, target sums, and one vectorised ``log1p`` per block.
#
# Shifting by the row maximum ``m`` and leaving the maximum's own term (exactly 1) out of
# the sum ``s'`` keeps small losses exact: ``log s = log1p(s')`` and every term of the
# losses below is non-negative (``z - m <= 0``), so nothing cancels and float32 sums are
# enough.  Rows whose statistics are not finite (NaN, +-inf logits, non-finite targets)
# are recomputed on their own by the per-row code, which owns those rules.  Every row's
# result depends on that row only: blocks, chunks and thread count do not change it.

#: Rows of at most this many bytes take the block kernels: C <= 48 in float32, C <= 24 in
#: float64.  Measured on 10M-element inputs (C = 2 .. 64, both dtypes): 2-9x faster than
#: the per-row kernels up to there; the dense one is slower from 256 bytes (float32 C = 64,
#: float64 C = 32), the sparse one level at float64 C = 32.
SHORT_ROW_BYTES = 192
#: Rows per block of the short-row kernels (turned blocks of logits and targets stay in L1).
SHORT_BLOCK = 64


@njit(**ROW)
def _turn_block(x, r0, nr, like, out):
    """``out[j, r] = x[r0 + r, j]`` in the type of ``like``: rows into SIMD lanes.

    Column by column, so the writes are contiguous and the strided reads vectorise as
    gathers (measured 3x faster than row by row for C = 10).  Any dtype and strides.
    """
    for j in range(x.shape[1]):
        col = x[r0 : r0 + nr, j]
        for r in range(nr):
            out[j, r] = as_type_of(col[r], like)


@njit(**ROW)
def _turned_max(bz, c, nr, m):
    """Row maxima ``m`` of a turned block (a NaN is skipped unless it comes first; a row with
    NaN is recomputed later anyway)."""
    for r in range(nr):
        m[r] = bz[0, r]
    for j in range(1, c):
        for r in range(nr):
            x = bz[j, r]
            m[r] = x if x > m[r] else m[r]


@njit(**ROW)
def _turned_sum_exp(bz, c, nr, m, s, ties):
    """``s[r] = sum_j exp(z[r, j] - m[r])`` over the terms below the maximum, ``ties[r]`` the
    number of terms at it (each exactly 1): ``s' = s + (ties - 1)`` leaves one out.

    Counting ties instead of finding the maximum's position keeps the loop free of
    data-dependent branches (measured: a branchy arg-max ran 5x slower on random rows).
    """
    zero = as_type_of(0.0, m[0])
    one = as_type_of(1.0, m[0])
    log2e = as_type_of(_LOG2E, m[0])
    for r in range(nr):
        s[r] = zero
        ties[r] = zero
    for j in range(c):
        for r in range(nr):
            d = bz[j, r] - m[r]
            at_max = as_type_of(d == zero, zero)  # 0 or 1: arithmetic, not a branch
            s[r] += fast_exp2(d * log2e) * (one - at_max)
            ties[r] += at_max


@njit(**ROW)
def _turned_shift_sum(bz, c, nr, m, w, out):
    """``out[r] = sum_j w_j (z[r, j] - m[r])`` (``w_j = 1`` when ``w`` is empty); a class of
    weight 0 adds nothing, even with a ``-inf`` logit."""
    zero = as_type_of(0.0, m[0])
    weighted = w.shape[0] == c
    for r in range(nr):
        out[r] = zero
    for j in range(c):
        wj = as_type_of(w[j], zero) if weighted else as_type_of(1.0, zero)
        for r in range(nr):
            out[r] += wj * (bz[j, r] - m[r]) if wj != zero else zero


@njit(**ROW)
def _turned_target_sums(bz, bt, c, nr, m, t_sum, tz):
    """``t_sum[r] = sum_j t``, ``tz[r] = sum_j t (z - m)`` where ``t != 0`` (never ``0 * -inf``)."""
    zero = as_type_of(0.0, m[0])
    for r in range(nr):
        t_sum[r] = zero
        tz[r] = zero
    for j in range(c):
        for r in range(nr):
            t = bt[j, r]
            t_sum[r] += t
            tz[r] += t * (bz[j, r] - m[r]) if t != zero else zero


@njit(**ROW)
def _turned_weigh(bt, c, nr, w):
    """``t *= w_j`` for each class (class weights multiply the targets)."""
    for j in range(c):
        wj = as_type_of(w[j], bt[0, 0])
        for r in range(nr):
            bt[j, r] *= wj


@njit(**SCALAR)
def _log1p_into(s, ties, nr, out):
    """``out = log1p(s + ties - 1)`` (``ties - 1`` is an exact small integer, usually 0):
    one vectorised loop; contract-only flags keep log1p exact."""
    one = as_type_of(1.0, s[0])
    for r in range(nr):
        out[r] = fast_log1p(s[r] + (ties[r] - one))


@njit(**ROW)
def _turned_lse_parts(bz, c, nr, m, s, ties, log_s):
    """Per row of a turned block: the maximum ``m``, the sums of :func:`_turned_sum_exp` and
    ``log s = log1p(s')``, so that ``lse = m + log s`` (shared by both short-row kernels)."""
    _turned_max(bz, c, nr, m)
    _turned_sum_exp(bz, c, nr, m, s, ties)
    _log1p_into(s, ties, nr, log_s)


@njit(**SCALAR)
def _short_smooth(smoothing, loss, log_s, shift_sum, w_sum, c):
    """``(1 - eps) loss + (eps / C) (W log s - sum_j w_j (z_j - m))`` (``W = C``, ``w = 1``
    unweighted): the smoothing term of both losses, relative to the row maximum."""
    smooth = (w_sum * log_s - shift_sum) / c
    return (1.0 - smoothing) * loss + smoothing * smooth


@njit(**SCALAR)
def _weight_total(w, c):
    """``sum w`` (``C`` without weights), the weight of the smoothing term's log s."""
    if w.shape[0] != c:
        return np.float64(c)
    total = 0.0
    for j in range(c):
        total += w[j]
    return total


@njit(**SCALAR)
def _finite(x):
    """Neither NaN nor infinite, as arithmetic (vectorises; no ``ninf``/``nnan`` flags)."""
    return abs(x) < np.inf


@njit(**SCALAR)
def _sparse_short_losses(bz, labels, r0, nr, m, s, log_s, shift_sum, out_loss, redo):
    """Plain sparse losses of a turned block, ``log s + (m - z_y)`` (both terms >= 0), in one
    tight loop over the rows; ``redo[r]`` marks rows for the per-row code (non-finite
    statistics, a label outside the row).  The label's logit is read at a clipped position.

    Contract-only flags: reassociation would turn ``log s + (m - z_y)`` into
    ``(log s + m) - z_y`` and cancel.
    """
    c = bz.shape[0]
    for r in range(nr):
        y = labels[r0 + r]
        inside = (y >= 0) & (y < c)
        # float64 as in the options' loop, so asking for the lse does not move a loss by an ulp
        loss = np.float64(log_s[r]) + (np.float64(m[r]) - np.float64(bz[y if inside else 0, r]))
        out_loss[r0 + r] = loss if y != IGNORED else 0.0
        redo[r] = not (_finite(s[r]) & _finite(shift_sum[r]) & (inside | (y == IGNORED)))


@njit(**SCALAR)
def _sparse_short_options(
    bz, labels, r0, nr, m, log_s, shift_sum, smoothing, w, w_total, out_loss, out_lse
):
    """Class weights, smoothing and lse on top of :func:`_sparse_short_losses` (rows it
    marked for redo are overwritten later)."""
    c = bz.shape[0]
    weighted = w.shape[0] == c
    keep_lse = out_lse.shape[0] > 0
    for r in range(nr):
        y = labels[r0 + r]
        ls = np.float64(log_s[r])
        if keep_lse:
            out_lse[r0 + r] = np.float64(m[r]) + ls
        if y < 0 or y >= c:
            continue
        loss = ls + (np.float64(m[r]) - np.float64(bz[y, r]))
        if weighted:
            loss *= w[y]
        if smoothing != 0.0:
            loss = _short_smooth(smoothing, loss, ls, np.float64(shift_sum[r]), w_total, c)
        out_loss[r0 + r] = loss


@njit(**SCALAR)
def _dense_short_finish(
    r0, nr, m, s, log_s, t_sum, tz, shift_sum, smoothing, w_total, c, out_loss, out_lse, redo
):
    """Dense losses of a turned block with options, as :func:`_sparse_short_losses`."""
    keep_lse = out_lse.shape[0] > 0
    for r in range(nr):
        ls = np.float64(log_s[r])
        loss = np.float64(t_sum[r]) * ls - np.float64(tz[r])  # tz <= 0 for t >= 0
        if smoothing != 0.0:
            loss = _short_smooth(smoothing, loss, ls, np.float64(shift_sum[r]), w_total, c)
        out_loss[r0 + r] = loss
        if keep_lse:
            out_lse[r0 + r] = np.float64(m[r]) + ls
        fine = _finite(s[r]) & _finite(t_sum[r]) & _finite(tz[r]) & _finite(shift_sum[r])
        redo[r] = not fine


@njit(**PARALLEL)
def sparse_logits_short_rows(z, labels, smoothing, class_weights, out_loss, out_lse):
    """:func:`sparse_logits` for many short rows (at most ``SHORT_ROW_BYTES``), any strides, with
    class weights and smoothing but no soft-cap or class mask (the engine sends those to
    :func:`sparse_logits`).

    Per row from the turned block (see the section comment): ``lse - z_y =
    log1p(s') + (m - z_y)``, both terms non-negative.  Rows with NaN or infinite
    statistics, and labels outside the row (never read), go to the per-row code.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    smoothed = smoothing != 0.0
    options = smoothed or keep_lse or class_weights.shape[0] == c
    w_total = _weight_total(class_weights, c)
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = _row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        like = np.zeros(1, z.dtype)[0]  # the element type, without reading z
        bz = np.empty((c, SHORT_BLOCK), z.dtype)
        m = np.empty(SHORT_BLOCK, z.dtype)
        s = np.empty(SHORT_BLOCK, z.dtype)
        ties = np.empty(SHORT_BLOCK, z.dtype)
        log_s = np.empty(SHORT_BLOCK, z.dtype)
        shift_sum = np.zeros(SHORT_BLOCK, z.dtype)
        redo = np.empty(SHORT_BLOCK, np.bool_)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            _turn_block(z, r0, nr, like, bz)
            _turned_lse_parts(bz, c, nr, m, s, ties, log_s)
            if smoothed:
                _turned_shift_sum(bz, c, nr, m, class_weights, shift_sum)
            _sparse_short_losses(bz, labels, r0, nr, m, s, log_s, shift_sum, out_loss, redo)
            if options:
                _sparse_short_options(
                    bz,
                    labels,
                    r0,
                    nr,
                    m,
                    log_s,
                    shift_sum,
                    smoothing,
                    class_weights,
                    w_total,
                    out_loss,
                    out_lse,
                )
            for r in range(nr):
                if redo[r]:  # rare: NaN, inf, a label outside the row
                    i = r0 + r
                    loss, lse = _sparse_row(z[i], labels[i], smoothing, class_weights)
                    out_loss[i] = loss
                    if keep_lse:
                        out_lse[i] = lse


@njit(**PARALLEL)
def dense_logits_short_rows(z, t, smoothing, class_weights, out_loss, out_lse):
    """:func:`dense_logits` for many short rows (at most ``SHORT_ROW_BYTES``), any strides and
    target dtype, with class weights and smoothing but no soft-cap or class mask.

    Per row from the turned blocks of logits and targets: ``T log1p(s') - sum t (z - m)``
    with ``T = sum t`` (weights multiply the targets), every term non-negative for
    non-negative targets.  Rows with NaN or infinite statistics go to the per-row code.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    weighted = class_weights.shape[0] == c
    smoothed = smoothing != 0.0
    w_total = _weight_total(class_weights, c)
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = _row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        like = np.zeros(1, z.dtype)[0]  # the element type, without reading z
        bz = np.empty((c, SHORT_BLOCK), z.dtype)
        bt = np.empty((c, SHORT_BLOCK), z.dtype)
        m = np.empty(SHORT_BLOCK, z.dtype)
        s = np.empty(SHORT_BLOCK, z.dtype)
        ties = np.empty(SHORT_BLOCK, z.dtype)
        log_s = np.empty(SHORT_BLOCK, z.dtype)
        t_sum = np.empty(SHORT_BLOCK, z.dtype)
        tz = np.empty(SHORT_BLOCK, z.dtype)
        shift_sum = np.zeros(SHORT_BLOCK, z.dtype)
        redo = np.empty(SHORT_BLOCK, np.bool_)
        tbuf = np.empty(c, z.dtype)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            _turn_block(z, r0, nr, like, bz)
            _turn_block(t, r0, nr, like, bt)
            if weighted:
                _turned_weigh(bt, c, nr, class_weights)
            _turned_lse_parts(bz, c, nr, m, s, ties, log_s)
            _turned_target_sums(bz, bt, c, nr, m, t_sum, tz)
            if smoothed:
                _turned_shift_sum(bz, c, nr, m, class_weights, shift_sum)
            _dense_short_finish(
                r0,
                nr,
                m,
                s,
                log_s,
                t_sum,
                tz,
                shift_sum,
                smoothing,
                w_total,
                c,
                out_loss,
                out_lse,
                redo,
            )
            for r in range(nr):
                if redo[r]:  # rare: NaN, inf, non-finite targets
                    i = r0 + r
                    if weighted:
                        _weigh_targets(t[i], class_weights, tbuf)
                        loss, lse = _dense_row(z[i], tbuf, smoothing, class_weights)
                    else:
                        loss, lse = _dense_row(z[i], t[i], smoothing, class_weights)
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
        bs, bt, btz = _block_dense(
            row[q : q + STREAM_BLOCK], trow[q : q + STREAM_BLOCK], shift, exact
        )
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
