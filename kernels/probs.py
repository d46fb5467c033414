"""Row kernels over probabilities: sparse (direct index gather) and dense (target rows).

Keras semantics, per row: ``q = p / sum(p)`` (skipped when ``renormalize`` is false),
``q`` clipped to ``[lo, hi]`` (``lo = eps``, ``hi = 1 - eps`` in the input precision),
then ``-sum_c t'_c log q_c``.  With ``renormalize`` false and no smoothing, the sparse
kernel reads exactly one element per row: ``p[i, y_i]``.
"""

import numpy as np
from numba import njit, prange
from numba.extending import overload

from ._config import PARALLEL, ROW, SCALAR
from ._half import widen, work_empty, work_zero
from ._math import as_type_of, fast_log
from ._simd import has_vector_exp, log_rows_accepts, log_rows_f32
from .rows import row_chunks
from .short_rows import (
    NO_STAT,
    SHORT_BLOCK,
    _prefetch_block,
    _turn_block,
    block_outside,
    chunk_total,
    fetches_ahead,
    turned_rows,
)
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
    per = row_chunks(n)
    for b in prange((n + per - 1) // per):
        for i in range(b * per, min(n, (b + 1) * per)):
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
                    block = row[q : q + STREAM_BLOCK]
                    logs += _block_sum_log_clipped(block, inv_total, total, lo, hi)
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
def _any_nonzero(tblock, like):
    """Whether a piece holds a target that is not 0 (NaN counts): a vectorised sum of
    ``|t|`` in the type of ``like``, which is 0 only when every target is (no cancellation;
    NaN and inf stay)."""
    zero = as_type_of(0.0, like)
    a = zero
    for j in range(tblock.shape[0]):
        a += abs(as_type_of(widen(tblock[j]), like))
    return a != zero


@njit(**ROW)
def _piece_logs(block, tblock, scale, lo, hi, keep, spread, q):
    """``sum_c t'_c log q_c`` over a piece as :func:`_piece_dense_probs`, the clipped values
    first gathered into ``q`` (at least the piece's length rounded up to 16) and their logs
    taken there in one vector loop (``_simd.log_rows_f32`` with AVX-512 or AVX2)."""
    n = block.shape[0]
    whole = (n + 15) // 16 * 16
    for j in range(n):
        q[j] = clip(widen(block[j]) * scale, lo, hi)
    for j in range(n, whole):
        q[j] = as_type_of(1.0, lo)
    _log_in_place(q[:whole])
    zero = as_type_of(0.0, lo)
    acc = zero
    for j in range(n):
        w = keep * as_type_of(widen(tblock[j]), lo) + spread
        acc += w * q[j] if w != zero else zero
    return acc


@njit(**SCALAR)
def dense_probs_row(row, trow, smoothing, lo, hi, renormalize, q):
    """``-sum_c t'_c log q_c`` of one row (see :func:`dense_probs`); ``q``: scratch of
    ``STREAM_BLOCK`` elements of the type computed in.

    After the row sum, the row is read once more (from cache unless it is very long), with
    the targets.  Without smoothing only pieces of ``TARGET_PIECE`` holding a target that is
    not 0 take their logs: one-hot and sparse soft targets then cost a few vector adds per
    element instead of a log.  A flat loop over the pieces: an inner block loop with software
    prefetch and an integer count of the non-zero targets took 1.5x as long from cache."""
    c = row.shape[0]
    total = row_total(row, renormalize)
    inv_total = as_type_of(1.0, total) / total  # see sparse_probs
    keep = as_type_of(1.0 - smoothing, lo)
    spread = as_type_of(smoothing / c, lo)
    smoothed = spread != as_type_of(0.0, spread)  # every term counts: logs everywhere
    piece = STREAM_BLOCK if smoothed else TARGET_PIECE
    acc = 0.0
    for k in range(0, c, piece):
        block, tblock = row[k : k + piece], trow[k : k + piece]
        if not smoothed and not _any_nonzero(tblock, lo):
            continue
        if inv_total == as_type_of(np.inf, lo):  # a subnormal row sum: divide, as Keras
            acc += _piece_dense_probs(block, tblock, inv_total, total, lo, hi, keep, spread)
        else:
            acc += _piece_logs(block, tblock, inv_total, lo, hi, keep, spread, q)
    return -acc


@njit(**PARALLEL)
def dense_probs(p, t, smoothing, lo, hi, renormalize, out_loss):
    """Per-row categorical cross-entropy from probabilities and target rows.

    ``loss_i = -sum_c t'_c log q[i, c]``, ``t' = (1 - eps) t + eps / C``, ``q`` the
    renormalised, clipped row; fused in one pass after the row sum (no N x C temporary).
    """
    n = p.shape[0]
    per = row_chunks(n)
    for chunk in prange((n + per - 1) // per):
        q = work_empty(STREAM_BLOCK, p)
        for i in range(chunk * per, min(n, (chunk + 1) * per)):
            out_loss[i] = dense_probs_row(p[i], t[i], smoothing, lo, hi, renormalize, q)


@njit(**SCALAR)
def _turned_totals(bp, c, renormalize, sum64, total):
    """Per row of a turned block: the divisor in the input precision (the float64 row sum
    ``sum64`` in column order, as :func:`row_total` sums a short row; 1 when not
    renormalising)."""
    lanes = bp.shape[1]
    for r in range(lanes):
        sum64[r] = 0.0 if renormalize else 1.0
    if renormalize:
        for j in range(c):
            for r in range(lanes):
                sum64[r] += np.float64(bp[j, r])
    for r in range(lanes):
        total[r] = as_type_of(sum64[r], total[r])


@njit(**ROW)
def _turned_clipped(bp, c, scale, lo, hi, q):
    """``q[j * L + r] = clip(bp[j, r] * scale[r])`` over every lane ``r < L`` of a turned
    block: a multiply, never the division :func:`_renormalised` falls back to (a vector loop
    would divide every element; rows whose scale overflowed are redone by the caller)."""
    lanes = bp.shape[1]
    for j in range(c):
        qj = q[j * lanes : (j + 1) * lanes]
        for r in range(lanes):
            qj[r] = clip(bp[j, r] * scale[r], lo, hi)


def _log_in_place(q):  # pragma: no cover - replaced by the overload
    """``q = log(q)`` elementwise (1-D)."""
    raise NotImplementedError


@overload(_log_in_place, jit_options={k: v for k, v in ROW.items() if k != "cache"})
def _log_in_place_impl(q):
    # float32 with AVX-512 (16 lanes, the exponent and mantissa from vgetexpps / vgetmantps)
    # or AVX2 (8 lanes, the scalar code's bit work in 32-bit integer lanes): kernels/_simd.py;
    # length a multiple of 16, as the callers' buffers are
    if has_vector_exp() and log_rows_accepts(q, q):
        return lambda q: log_rows_f32(q, q)

    def scalar(q):  # one array, so that no overlap test sends LLVM to its scalar loop
        for g in range(q.shape[0]):
            q[g] = fast_log(q[g])

    return scalar


@njit(**ROW)
def _turned_weighted_sums(bt, c, q, keep, spread, acc):
    """``acc[r] = sum_j t'[j, r] q[j * L + r]`` with ``t' = keep * t + spread``, in column
    order; a term whose ``t'`` is 0 adds 0 (never ``0 * log q``)."""
    lanes = bt.shape[1]
    zero = as_type_of(0.0, keep)
    for r in range(lanes):
        acc[r] = zero
    for j in range(c):
        qj = q[j * lanes : (j + 1) * lanes]
        for r in range(lanes):
            w = keep * bt[j, r] + spread
            acc[r] += w * qj[r] if w != zero else zero


@njit(**PARALLEL)
def dense_probs_short_rows(p, t, smoothing, lo, hi, renormalize, out_loss, out_total):
    """:func:`dense_probs` for many short rows (see ``kernels/short_rows.py``): blocks of
    ``SHORT_BLOCK`` rows are turned so that rows fill the SIMD lanes, and every log is a
    vector one (a short row's own loop takes them one at a time: 40 ms for 1,000,000 x 10
    float32 one-hot rows on AMD EPYC Zen 4, where JAX takes 25 ms).  ``out_total`` (float64,
    ``ROW_CHUNKS``, or empty) receives the chunks' loss sums (``short_rows.chunk_total``)."""
    n, c = p.shape
    keep = as_type_of(1.0 - smoothing, lo)
    spread = as_type_of(smoothing / c, lo) if c else as_type_of(0.0, lo)
    # the next block fetched ahead (short_rows._prefetch_block, where it is measured)
    ahead = fetches_ahead(p)
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        like = work_zero(p)
        tiles_p = work_empty((turned_rows(c), SHORT_BLOCK), p)
        tiles_t = work_empty((turned_rows(c), SHORT_BLOCK), p)
        bp, bt = tiles_p[:c], tiles_t[:c]
        total = work_empty(SHORT_BLOCK, p)
        sum64 = np.empty(SHORT_BLOCK)
        scale = work_empty(SHORT_BLOCK, p)
        acc = work_empty(SHORT_BLOCK, p)
        q = work_empty(c * SHORT_BLOCK, p)  # the clipped block, then its logs
        qrow = work_empty(STREAM_BLOCK, p)
        raw = np.empty((c, SHORT_BLOCK), np.uint16)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            _turn_block(p, r0, nr, like, tiles_p, raw, acc, NO_STAT)
            if ahead:
                _prefetch_block(p, r0 + SHORT_BLOCK)
                _prefetch_block(t, r0 + SHORT_BLOCK)
            _turn_block(t, r0, nr, like, tiles_t, raw, acc, NO_STAT)
            # every lane of the buffers, rows past nr included (their results are not used),
            # so that no row is computed by a scalar remainder loop instead of a vector one
            _turned_totals(bp, c, renormalize, sum64, total)
            for r in range(SHORT_BLOCK):
                scale[r] = as_type_of(1.0, total[r]) / total[r]
            _turned_clipped(bp, c, scale, lo, hi, q)
            _log_in_place(q)
            _turned_weighted_sums(bt, c, q, keep, spread, acc)
            for r in range(nr):
                if scale[r] == as_type_of(np.inf, like):  # a subnormal row sum: divide
                    i = r0 + r
                    out_loss[i] = dense_probs_row(p[i], t[i], smoothing, lo, hi, renormalize, qrow)
                else:
                    out_loss[r0 + r] = -np.float64(acc[r])
        chunk_total(out_loss, chunk, per, out_total)


@njit(**ROW)
def _gathered_clipped(p, labels, r0, nr, total, lo, hi, q):
    """``q[r] = clip(p[r0 + r, y] / total[r])`` for the rows of a block whose label ``y`` is a
    class (1 elsewhere, and in the lanes past ``nr``): :func:`sparse_probs`'s value, divided
    as there (one element per row)."""
    c = p.shape[1]
    one = as_type_of(1.0, lo)
    for r in range(q.shape[0]):
        y = labels[r0 + r] if r < nr else -1
        if 0 <= y < c:
            q[r] = clip(widen(p[r0 + r, y]) / total[r], lo, hi)
        else:
            q[r] = one


@njit(**PARALLEL)
def sparse_probs_short_rows(
    p, labels, smoothing, lo, hi, renormalize, out_loss, out_total, out_outside
):
    """:func:`sparse_probs` without smoothing for many short rows: the row sums from turned
    blocks (see :func:`dense_probs_short_rows`), then one vector log per block of the
    gathered label values instead of a scalar log per row (``smoothing`` must be 0);
    ``out_total`` as for :func:`dense_probs_short_rows`, ``out_outside`` as for
    ``short_rows.sparse_logits_short_rows``."""
    n, c = p.shape
    counting = out_outside.shape[0] > 0
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        outside = 0
        like = work_zero(p)
        tiles_p = work_empty((turned_rows(c), SHORT_BLOCK), p)
        bp = tiles_p[:c]
        total = work_empty(SHORT_BLOCK, p)
        sum64 = np.empty(SHORT_BLOCK)
        q = work_empty(SHORT_BLOCK, p)
        raw = np.empty((c, SHORT_BLOCK), np.uint16)
        total[:] = as_type_of(1.0, like)
        ahead = fetches_ahead(p)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            if counting:
                outside += block_outside(labels, r0, nr, c)
            if renormalize:  # else one element per row is all that is read
                _turn_block(p, r0, nr, like, tiles_p, raw, q, NO_STAT)
                if ahead:  # as the sparse logits' (short_rows._prefetch_block)
                    _prefetch_block(p, r0 + SHORT_BLOCK)
                _turned_totals(bp, c, True, sum64, total)
            _gathered_clipped(p, labels, r0, nr, total, lo, hi, q)
            _log_in_place(q)
            for r in range(nr):
                y = labels[r0 + r]
                if y == IGNORED:
                    out_loss[r0 + r] = 0.0
                elif y < 0 or y >= c:
                    out_loss[r0 + r] = np.nan
                else:
                    out_loss[r0 + r] = -np.float64(q[r])
        chunk_total(out_loss, chunk, per, out_total)
        if counting:
            out_outside[chunk] = outside


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
    per = row_chunks(n)
    for b in prange((n + per - 1) // per):
        for i in range(b * per, min(n, (b + 1) * per)):
            row = p[i]
            s = 0.0
            bad = 0
            for q in range(0, c, BLOCK):
                bs, bb = _block_check(row[q : q + BLOCK])
                s += bs
                bad += bb
            out_sum[i] = s
            out_bad[i] = bad
