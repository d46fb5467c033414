"""Streaming primitives of the logits kernels: one-pass statistics of one row.


Row kernels (``rows``, ``short_rows``, ``long_rows``) take validated, correctly typed
2-D arrays (any strides) and write one value per row; the wrappers in ``xent`` own every
policy decision.

Log-sum-exp in one pass.  ``lse = M + log sum exp(z - M)`` holds for any shift ``M``; the
usual choice, the row maximum, costs a second pass.  The kernels instead take ``M`` from a
few elements they read anyway (the first ``GUESS`` elements; for the sparse loss the first
element and the label's logit) and sum ``2**((z - M) log2 e)`` in one vectorised pass.
Because ``M`` is an element of the row, the sum is at least 1; if it exceeds ``ACCEPT`` (the
guess may lie far below the maximum, or the row holds NaN or inf) the row is recomputed
exactly with the true maximum (an integer max over order-preserving bit keys, which LLVM
vectorises without ``nnan``).  A term's rounding error is ``|u| ln 2`` epsilons relative, as on the
exact path, where ``u`` is its distance below the maximum; a guessed shift can add positive
``u`` up to ``log2 ACCEPT = 24``: at most 1e-6 extra relative error of the sum in float32
(about one ulp of a log-sum-exp near 10), 4e-15 in float64, and only when the guess
is poor (for trained models the label's logit usually is the maximum).  The targets' sums
are taken relative to the same ``M``, so large logits never cancel.  The sum of
exponentials (terms at most ``ACCEPT``) runs in the input precision over blocks of
``STREAM_BLOCK`` elements and in float64 across blocks, and so do the target sums, which are
recomputed in float64 throughout when a float32 block sum overflows (logits near the
float32 limit); the plain sum of logits (smoothing) runs in float64.  On CPUs with AVX-512 or
AVX2, contiguous float32 rows (and float64 rows with AVX-512) take the sum of exponentials in
one explicit vector loop (``_simd``): each float32 lane sums 16 terms in float32 before adding
them to its float64 sum.

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
from numba import njit
from numba.extending import overload

from ._bits import from_ordered_bits, ordered_bits, prefetch
from ._config import ROW, SCALAR
from ._half import widen
from ._math import as_type_of, fast_exp, fast_exp2
from ._simd import (
    dense_sums_intrinsic,
    has_vector_exp,
    row_sums_accept,
    sum_exp2,
    sum_exp2_intrinsic,
)

_OVERLOAD_ROW = {k: v for k, v in ROW.items() if k != "cache"}

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
LOG2E = 1.4426950408889634


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
    first = widen(row[0])
    k = ordered_bits(first)
    for j in range(1, row.shape[0]):
        b = ordered_bits(widen(row[j]))
        k = b if b > k else k
    return from_ordered_bits(k, first)


@njit(**ROW)
def _block_sum_exp(block, m):
    acc = as_type_of(0.0, m)
    for j in range(block.shape[0]):
        acc += fast_exp(widen(block[j]) - m)
    return np.float64(acc)


@njit(**ROW)
def row_sum_exp(row, m):
    """``sum exp(row - m)`` with the full-range exp, float64 result (the exact path)."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum_exp(row[q : q + BLOCK], m)
    return s


@njit(**ROW)
def _block_sum_exp2_scalar(block, shift):
    log2e = as_type_of(LOG2E, shift)
    acc = as_type_of(0.0, shift)
    for j in range(block.shape[0]):
        acc += fast_exp2((widen(block[j]) - shift) * log2e)
    return np.float64(acc)


def _block_sum_exp2(block, shift):  # pragma: no cover - replaced by the overload
    """``sum 2**((block - shift) log2 e)`` of one block in its precision, as float64."""
    raise NotImplementedError


@overload(_block_sum_exp2, jit_options=_OVERLOAD_ROW)
def _block_sum_exp2_impl(block, shift):
    # contiguous float32 on an AVX-512 or AVX2 CPU, float64 with AVX-512: the explicit loop
    # (kernels/_simd.py), about 30% cheaper per element; everything else: the vectorised
    # scalar loop
    if has_vector_exp() and row_sums_accept(shift, block):
        return lambda block, shift: sum_exp2(block, shift)
    return lambda block, shift: _block_sum_exp2_scalar(block, shift)


@njit(**ROW)
def _block_sum(block):
    acc = 0.0  # float64: a float32 row of logits near 1e38 must not overflow its sum
    for j in range(block.shape[0]):
        acc += np.float64(widen(block[j]))
    return acc


@njit(**ROW)
def row_sum(row):
    """``sum row`` accumulated in float64."""
    s = 0.0
    for q in range(0, row.shape[0], BLOCK):
        s += _block_sum(row[q : q + BLOCK])
    return s


_stream_sum_exp2 = sum_exp2_intrinsic(PREFETCH_AHEAD)


@njit(**ROW)
def _stream_sum_exp2_scalar(row, shift):
    s = 0.0
    prefetch_span(row, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        s += _block_sum_exp2(row[q : q + STREAM_BLOCK], shift)
    return s


def stream_sum_exp2(row, shift):  # pragma: no cover - replaced by the overload
    """``sum 2**((row - shift) log2 e)`` (float64), streamed with software prefetch."""
    raise NotImplementedError


@overload(stream_sum_exp2, jit_options=_OVERLOAD_ROW)
def _stream_sum_exp2_impl(row, shift):
    # contiguous float32 on an AVX-512 or AVX2 CPU, float64 with AVX-512: one explicit loop
    # over the whole row (kernels/_simd.py); calling it per block of 256 cost 0.19 cycles per
    # element more
    if has_vector_exp() and row_sums_accept(shift, row):
        return lambda row, shift: _stream_sum_exp2(row, shift)
    return lambda row, shift: _stream_sum_exp2_scalar(row, shift)


@njit(**ROW)
def row_lse_parts(row, guess):
    """``(M, log s)`` with ``logsumexp(row) = M + log s``; ``guess`` must be a row element.

    One pass with ``M = guess`` when that is accepted, else the exact two-pass path with
    ``M = max(row)``.  ``log s`` is NaN for a row of only ``-inf`` (no softmax exists).
    """
    s = stream_sum_exp2(row, guess)
    if s <= ACCEPT:  # False for NaN
        return np.float64(guess), np.log(s)
    return row_lse_exact(row)


@njit(**ROW)
def row_lse_exact(row):
    """``(M, log s)`` by the exact two-pass path, ``M = max(row)`` (what a rejected guess
    falls back to)."""
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
        wz += wj * (np.float64(widen(row[j])) - m) if wj != 0.0 else 0.0
    return w_sum, wz


@njit(**SCALAR)
def sparse_row_loss(row, y, m, log_s, smoothing, w):
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
    loss = log_s - (np.float64(widen(row[y])) - m)
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


@njit(**SCALAR)
def prefetch_guess(z, labels, i):
    """Prefetch what :func:`sparse_guess` reads of row ``i`` (if any): its first element and
    its label's logit.  Called one row ahead by the long-row loop: the label's logit lies
    anywhere in a long row, far past the stream's own prefetches, and reading it cost a
    miss to memory per row (5% of the 100,000 x 1,000 float32 loss, Intel Xeon, LLVM
    ``emeraldrapids``)."""
    n, c = z.shape
    if i < n:
        row = z[i]
        prefetch(row, 0)
        y = labels[i]
        if y >= 0 and y < c:
            prefetch(row, y)


@njit(**SCALAR)
def sparse_guess(row, y):
    """The shift for a sparse row: its first element, or the label's logit if larger (for a
    trained model the label's logit is usually the row's maximum).

    Not the maximum of the first ``GUESS`` elements as for a dense row: with the label's
    logit read too, that cost 3-5% of the 100,000 x 1,000 float32 loss (Intel Xeon, LLVM
    ``emeraldrapids``) and helps only rows whose maximum lies more than ``log ACCEPT``
    above the label's logit and among the first elements; those take the exact path now.
    A NaN or inf in either makes the sum NaN, which takes the exact path too."""
    guess = widen(row[0])
    if y >= 0 and y < row.shape[0]:
        zy = widen(row[y])
        guess = zy if zy > guess else guess
    return guess


@njit(**ROW)
def _block_dense(block, tblock, shift, exact):
    """Block sums ``(exp(z - M), t, t (z - M) where t != 0)`` in the input precision.

    ``exact`` selects the full-range exp (the fallback path) over the one-pass ``2**u``.
    """
    zero = as_type_of(0.0, shift)
    log2e = as_type_of(LOG2E, shift)
    s = zero
    t_sum = zero
    tz = zero
    for j in range(block.shape[0]):
        d = widen(block[j]) - shift
        t = as_type_of(widen(tblock[j]), shift)
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
        t = np.float64(widen(trow[j]))
        t_sum += t
        tz += t * (np.float64(widen(row[j])) - m) if t != 0.0 else 0.0
    return t_sum, tz


_dense_sums = dense_sums_intrinsic(PREFETCH_AHEAD)


def dense_row_sums(row, trow, shift, exact):  # pragma: no cover - replaced by the overload
    """``(sum exp(z - M), sum t, sum t (z - M) where t != 0)`` of a row (float64), streamed
    with software prefetch; ``exact`` takes the full-range exp (the fallback path)."""
    raise NotImplementedError


@overload(dense_row_sums, jit_options=_OVERLOAD_ROW)
def _dense_row_sums_impl(row, trow, shift, exact):
    # contiguous float32 logits and targets on an AVX-512 or AVX2 CPU (float64 with
    # AVX-512): one explicit loop over the row (kernels/_simd.py) for the one-pass sums
    if has_vector_exp() and row_sums_accept(shift, row, trow):

        def impl(row, trow, shift, exact):
            if exact:
                return _dense_row_sums_scalar(row, trow, shift, exact)
            return _dense_sums(row, trow, shift)

        return impl
    return lambda row, trow, shift, exact: _dense_row_sums_scalar(row, trow, shift, exact)


@njit(**ROW)
def _dense_row_sums_scalar(row, trow, shift, exact):
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
def dense_row_finish(row, trow, smoothing, w, m, s, t_sum, tz):
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
