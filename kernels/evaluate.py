"""The fused evaluation kernels: per row, the loss, the rank of the true class and the
statistics every evaluation metric is formed from.

``rank`` is the position of the true class ``y`` among the row's scores, under a tie policy:

* ``TIES_STABLE`` (0): a stable descending sort (``np.argsort(-row, kind="stable")``): the
  classes scoring higher, plus those scoring the same with a smaller index;
* ``TIES_OPTIMISTIC`` (1): only the classes scoring strictly higher (TensorFlow's
  ``in_top_k``: every class tied with ``y`` counts as within ``k``);
* ``TIES_PESSIMISTIC`` (2): every class scoring higher or the same.

NaN scores rank after every number (as NumPy sorts them).  Accuracy is ``rank == 0``,
top-k accuracy ``rank < k``: no sort, no partition, no temporary.

Per-row statistics, written to ``out_stats[i, :]`` (float64):

* ``STAT_LSE``: ``log sum exp z`` for logits; ``log sum p`` (the log of the renormaliser,
  0 for normalised rows) for probabilities;
* ``STAT_CONF``: the top-1 probability ``max_c p_c`` (calibration);
* ``STAT_ENTROPY``: ``-sum_c p_c log p_c`` (``0 log 0 = 0``);
* ``STAT_BRIER``: ``sum_c (p_c - t_c)**2`` with ``t`` the one-hot label (sparse) or the
  target row (dense);
* ``STAT_PTRUE``: ``p_y`` (unclipped), ``y`` the label or the target row's first arg-max;

with ``p`` the softmax of the logits or the renormalised probabilities.

Sparse logits take every statistic from the loss's one streaming pass (the exponentials it
already computes also give ``sum e (z - M)`` and ``sum e**2``): the row is read from memory
once.  The rank, the maximum and (on request) the arg-max are counted in a second loop that
reads the row from cache (a row of 131,072 float32 is 512 KiB, well inside L2).  Dense
targets and probabilities take their extra sums in that cached loop too.
"""

import numpy as np
from numba import njit, prange

from ._bits import from_ordered_bits
from ._bits import ordered_bits as ordered_key
from ._config import PARALLEL, ROW, SCALAR
from ._half import widen, work_empty
from ._math import as_type_of, fast_exp, fast_exp2, fast_log
from .probs import clip, dense_probs_row, row_total
from .rows import dense_row, row_chunks
from .stream import (
    ACCEPT,
    IGNORED,
    LOG2E,
    PREFETCH_AHEAD,
    STREAM_BLOCK,
    prefetch_span,
    row_max,
    sparse_guess,
    sparse_row_loss,
)

TIES_STABLE = 0
TIES_OPTIMISTIC = 1
TIES_PESSIMISTIC = 2

STAT_LSE = 0
STAT_CONF = 1
STAT_ENTROPY = 2
STAT_BRIER = 3
STAT_PTRUE = 4
N_STATS = 5


# ------------------------------------------------------------------ ranks
@njit(**ROW)
def _count_at_least(block, v, k):
    """``(elements >= v, max(k, their largest order key))``: the count and the row's
    maximum in one loop (``+NaN`` wins the maximum, as in ``stream.row_max``)."""
    n = 0
    for j in range(block.shape[0]):
        x = widen(block[j])
        n += 1 if x >= v else 0
        b = ordered_key(x)
        k = b if b > k else k
    return n, k


@njit(**ROW)
def _count_above(block, v, k):
    """``(elements > v, max(k, their largest order key))``."""
    n = 0
    for j in range(block.shape[0]):
        x = widen(block[j])
        n += 1 if x > v else 0
        b = ordered_key(x)
        k = b if b > k else k
    return n, k


@njit(**ROW)
def _count_numbers(block):
    n = 0
    for j in range(block.shape[0]):
        x = widen(block[j])
        n += 1 if x == x else 0
    return n


@njit(**SCALAR)
def rank_and_max(row, y, ties):
    """``(rank, max)``: the position of class ``y`` in the descending order of ``row`` (NaN
    last) under the tie policy ``ties``, and the row's maximum (float64; ``+NaN`` wins, so
    any NaN makes the statistics formed from it NaN)."""
    v = widen(row[y])
    k = ordered_key(v)
    if v == v:
        if ties == TIES_OPTIMISTIC:
            r, k = _count_above(row, v, k)
        elif ties == TIES_PESSIMISTIC:
            r, k = _count_at_least(row, v, k)
            r -= 1
        else:
            r, k = _count_at_least(row[:y], v, k)
            r2, k = _count_above(row[y + 1 :], v, k)
            r += r2
        return r, np.float64(from_ordered_bits(k, v))
    # a NaN score ranks after every number; among the NaNs by index (stable), first
    # (optimistic) or last (pessimistic)
    if ties == TIES_OPTIMISTIC:
        r = _count_numbers(row)
    elif ties == TIES_PESSIMISTIC:
        r = row.shape[0] - 1
    else:
        r = y + _count_numbers(row[y + 1 :])
    return r, np.nan


@njit(**ROW)
def _number_max(row):
    """The largest number of the row (NaN ignored; ``-inf`` for a row of only NaN), as an
    order-preserving integer key: an integer max, which LLVM vectorises without ``nnan``."""
    lowest = ordered_key(as_type_of(-np.inf, widen(row[0])))
    k = lowest
    for j in range(row.shape[0]):
        x = widen(row[j])
        b = ordered_key(x) if x == x else lowest
        k = b if b > k else k
    return k


@njit(**ROW)
def _count_equal(block, v):
    n = 0
    for j in range(block.shape[0]):
        n += 1 if widen(block[j]) == v else 0
    return n


#: Elements per vectorised test of the arg-max search.
_SEARCH = 64


@njit(**SCALAR)
def first_index_of(row, v):
    """The first index of the number ``v`` in ``row`` (-1 if absent): a vectorised count per
    block of ``_SEARCH`` elements, then a scalar scan of the block that holds it."""
    for q in range(0, row.shape[0], _SEARCH):
        block = row[q : q + _SEARCH]
        if _count_equal(block, v) != 0:
            for j in range(block.shape[0]):
                if widen(block[j]) == v:
                    return q + j
    return -1


@njit(**SCALAR)
def first_argmax(row, top):
    """The class ranked first in the stable order: the first index of the largest number
    (``np.argmax`` for rows without NaN); 0 for a row of only NaN.  ``top`` is the row's
    maximum with ``+NaN`` winning (:func:`rank_and_max`)."""
    if top == top:
        return first_index_of(row, as_type_of(top, widen(row[0])))
    k = _number_max(row)  # a NaN in the row: the largest number, by its order key
    for j in range(row.shape[0]):
        x = widen(row[j])
        if x == x and ordered_key(x) == k:
            return j
    return 0


@njit(**SCALAR)
def _first_argmax_targets(trow):
    """Index of the first largest target (Keras's ``argmax(y_true)``)."""
    best = 0
    v = widen(trow[0])
    for j in range(1, trow.shape[0]):
        x = widen(trow[j])
        if x > v:
            best = j
            v = x
    return best


# ------------------------------------------------------------------ sparse logits, fused
@njit(**ROW)
def _block_exp_moments(block, shift, exact):
    """Block sums ``(e, e (z - M), e**2)`` with ``e = exp(z - M)``, in the input precision;
    a zero ``e`` adds nothing to the middle sum (``0 * -inf`` is never formed)."""
    zero = as_type_of(0.0, shift)
    log2e = as_type_of(LOG2E, shift)
    s = zero
    a = zero
    b = zero
    for j in range(block.shape[0]):
        d = widen(block[j]) - shift
        e = fast_exp(d) if exact else fast_exp2(d * log2e)
        s += e
        a += e * d if e != zero else zero
        b += e * e
    return np.float64(s), np.float64(a), np.float64(b)


@njit(**ROW)
def _row_exp_moments(row, shift, exact):
    s = 0.0
    a = 0.0
    b = 0.0
    prefetch_span(row, 0, PREFETCH_AHEAD)
    for q in range(0, row.shape[0], STREAM_BLOCK):
        prefetch_span(row, q + PREFETCH_AHEAD, q + PREFETCH_AHEAD + STREAM_BLOCK)
        bs, ba, bb = _block_exp_moments(row[q : q + STREAM_BLOCK], shift, exact)
        s += bs
        a += ba
        b += bb
    return s, a, b


@njit(**SCALAR)
def logits_moments(row, guess):
    """``(M, log s, entropy, sum p**2)`` of a row of logits in one streaming pass, with
    ``s = sum exp(z - M)``; the shift ``M`` guessed and checked as for the loss
    (``stream.row_lse_parts``), the exact path with the row maximum otherwise."""
    m = guess
    s, a, b = _row_exp_moments(row, m, False)
    if not s <= ACCEPT:  # also NaN
        m = row_max(row)
        if m == -np.inf:
            return np.float64(m), np.nan, np.nan, np.nan
        s, a, b = _row_exp_moments(row, m, True)
    log_s = np.log(s)
    return np.float64(m), log_s, log_s - a / s, b / (s * s)


# ------------------------------------------------------------------ cached second loops
@njit(**ROW)
def _block_prob_moments(block, tblock, dense, logits, shift, scale):
    """Block sums ``(p log p, p**2, p t, t**2)`` with ``p = exp(z - shift)`` (logits; then
    ``log p = z - shift``) or ``p = x scale`` (probabilities); ``t`` only when ``dense``."""
    zero = as_type_of(0.0, shift)
    h = zero
    q = zero
    pt = zero
    tt = zero
    for j in range(block.shape[0]):
        x = widen(block[j])
        if logits:
            d = x - shift
            p = fast_exp(d)
            h += p * d if p != zero else zero
        else:
            p = x * scale
            h += p * fast_log(p) if p != zero else zero
        q += p * p
        if dense:
            t = as_type_of(widen(tblock[j]), shift)
            pt += p * t
            tt += t * t
    return np.float64(h), np.float64(q), np.float64(pt), np.float64(tt)


@njit(**ROW)
def prob_moments(row, trow, dense, logits, shift, scale):
    """Row sums of :func:`_block_prob_moments`, float64 across blocks."""
    h = 0.0
    q = 0.0
    pt = 0.0
    tt = 0.0
    for b in range(0, row.shape[0], STREAM_BLOCK):
        tb = trow[b : b + STREAM_BLOCK] if dense else trow
        bh, bq, bpt, btt = _block_prob_moments(
            row[b : b + STREAM_BLOCK], tb, dense, logits, shift, scale
        )
        h += bh
        q += bq
        pt += bpt
        tt += btt
    return h, q, pt, tt


@njit(**SCALAR)
def _store(i, rank, lse, top, entropy, brier, p_true, out_rank, out_stats):
    out_rank[i] = rank
    out_stats[i, STAT_LSE] = lse
    out_stats[i, STAT_CONF] = top
    out_stats[i, STAT_ENTROPY] = entropy
    out_stats[i, STAT_BRIER] = brier
    out_stats[i, STAT_PTRUE] = p_true


@njit(**PARALLEL)
def evaluate_sparse(
    pred, labels, from_logits, lo, hi, no_weights, ties, out_loss, out_rank, out_stats, out_arg
):
    """Per row: Keras's sparse loss (logits, or renormalised clipped probabilities), the rank
    of the label under ``ties``, the statistics of the module docstring and, when
    ``out_arg`` has ``n`` elements, the arg-max.  ``IGNORED`` rows give loss 0, rank -1,
    arg-max -1 and NaN statistics, and are not read."""
    n, c = pred.shape
    want_arg = out_arg.shape[0] == n
    per = row_chunks(n)
    for b in prange((n + per - 1) // per):
        for i in range(b * per, min(n, (b + 1) * per)):
            y = labels[i]
            if y == IGNORED or y < 0 or y >= c:
                out_loss[i] = 0.0 if y == IGNORED else np.nan
                out_rank[i] = -1
                for k in range(N_STATS):
                    out_stats[i, k] = np.nan
                if want_arg:
                    out_arg[i] = -1
                continue
            row = pred[i]
            if from_logits:
                m, log_s, entropy, sumsq = logits_moments(row, sparse_guess(row, y))
                loss = sparse_row_loss(row, y, m, log_s, 0.0, no_weights)
                lse = m + log_s
                rank, best = rank_and_max(row, y, ties)
                p_true = np.exp(np.float64(widen(row[y])) - lse)
                top = np.exp(best - lse)
            else:
                total = row_total(row, True)
                loss = -np.log(np.float64(clip(widen(row[y]) / total, lo, hi)))
                scale = as_type_of(1.0, total) / total
                h, sumsq, _, _ = prob_moments(row, row, False, False, total, scale)
                entropy = -h
                lse = np.log(np.float64(total))
                rank, best = rank_and_max(row, y, ties)
                p_true = np.float64(widen(row[y])) / np.float64(total)
                top = best / np.float64(total)
            out_loss[i] = loss
            brier = sumsq - 2.0 * p_true + 1.0
            _store(i, rank, lse, top, entropy, brier, p_true, out_rank, out_stats)
            if want_arg:
                out_arg[i] = y if rank == 0 and ties == TIES_STABLE else first_argmax(row, best)


@njit(**PARALLEL)
def evaluate_dense(
    pred, t, from_logits, lo, hi, no_weights, ties, out_loss, out_rank, out_stats, out_arg, out_y
):
    """Per row: Keras's categorical loss against the target row, the rank of the target
    row's first arg-max ``out_y`` (the class Keras's categorical accuracy compares), the
    statistics of the module docstring (Brier against the target row) and, on request, the
    arg-max."""
    n = pred.shape[0]
    want_arg = out_arg.shape[0] == n
    per = row_chunks(n)
    for chunk in prange((n + per - 1) // per):
        q = work_empty(STREAM_BLOCK, pred)  # scratch of the probability loss's logs
        for i in range(chunk * per, min(n, (chunk + 1) * per)):
            row = pred[i]
            trow = t[i]
            y = _first_argmax_targets(trow)
            out_y[i] = y
            if from_logits:
                loss, lse = dense_row(row, trow, 0.0, no_weights)
                lse = np.float64(lse)
                shift = as_type_of(lse, widen(row[0]))
                h, sumsq, pt, tt = prob_moments(row, trow, True, True, shift, shift)
                rank, best = rank_and_max(row, y, ties)
                p_true = np.exp(np.float64(widen(row[y])) - lse)
                top = np.exp(best - lse)
            else:
                loss = dense_probs_row(row, trow, 0.0, lo, hi, True, q)
                total = row_total(row, True)
                scale = as_type_of(1.0, total) / total
                h, sumsq, pt, tt = prob_moments(row, trow, True, False, total, scale)
                lse = np.log(np.float64(total))
                rank, best = rank_and_max(row, y, ties)
                p_true = np.float64(widen(row[y])) / np.float64(total)
                top = best / np.float64(total)
            out_loss[i] = loss
            brier = sumsq - 2.0 * pt + tt
            _store(i, rank, lse, top, -h, brier, p_true, out_rank, out_stats)
            if want_arg:
                out_arg[i] = y if rank == 0 and ties == TIES_STABLE else first_argmax(row, best)


# ------------------------------------------------------------------ sums of a block
#: Slots of ``evaluation_sums``'s ``scalars``.
SUM_WEIGHT, SUM_COUNT, SUM_LOSS, SUM_W2, SUM_W2_LOSS, SUM_W2_LOSS2 = 0, 1, 2, 3, 4, 5
SUM_ENTROPY, SUM_BRIER, SUM_RR, SUM_HITS1, SUM_W2_HITS1, SUM_NAN_CONF = 6, 7, 8, 9, 10, 11
N_SUMS = 12


@njit(**SCALAR)
def evaluation_sums(
    loss, rank, stats, argmax, weight, true, ks, scalars, hits, w2_hits, bins, classes, confusion
):
    """Add one block's per-row outputs into the float64 sums every metric is formed from,
    serially in row order (so the sums do not depend on the thread count).

    Rows of rank -1 are not counted.  ``weight`` is empty for unit weights.  ``bins`` is
    ``(3, n_bins)``: weight, weighted confidence and weighted hits per confidence bin
    ``min(floor(n_bins conf), n_bins - 1)``; ``classes`` is ``(2, C)``: weight and weighted
    hits per true class; ``confusion`` (``C * C``, empty for none) the weight per (true class,
    arg-max).  A hit is rank 0.  NaN confidences are counted in ``scalars[SUM_NAN_CONF]``.
    """
    n = loss.shape[0]
    n_bins = bins.shape[1]
    c = classes.shape[1]
    weighted = weight.shape[0] == n
    with_confusion = confusion.shape[0] == c * c and c > 0
    for i in range(n):
        r = rank[i]
        if r < 0:
            continue
        w = weight[i] if weighted else 1.0
        w2 = w * w
        x = np.float64(loss[i])
        hit = r == 0
        scalars[SUM_WEIGHT] += w
        scalars[SUM_COUNT] += 1.0
        scalars[SUM_LOSS] += w * x
        scalars[SUM_W2] += w2
        scalars[SUM_W2_LOSS] += w2 * x
        scalars[SUM_W2_LOSS2] += w2 * x * x
        scalars[SUM_ENTROPY] += w * stats[i, STAT_ENTROPY]
        scalars[SUM_BRIER] += w * stats[i, STAT_BRIER]
        scalars[SUM_RR] += w / (r + 1.0)
        if hit:
            scalars[SUM_HITS1] += w
            scalars[SUM_W2_HITS1] += w2
        for j in range(ks.shape[0]):
            if r < ks[j]:
                hits[j] += w
                w2_hits[j] += w2
        conf = stats[i, STAT_CONF]
        if conf == conf:
            b = int(min(max(conf, 0.0), 1.0) * n_bins)
            b = min(b, n_bins - 1)
            bins[0, b] += w
            bins[1, b] += w * conf
            if hit:
                bins[2, b] += w
        else:
            scalars[SUM_NAN_CONF] += 1.0
        y = true[i]
        classes[0, y] += w
        if hit:
            classes[1, y] += w
        if with_confusion:
            confusion[y * c + argmax[i]] += w
