"""Many short rows: turned row blocks (rows in SIMD lanes), sparse and dense."""

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ._bits import TILE_F32, tile_width, turn_tile, turn_tile_max, turn_tile_sum
from ._config import PARALLEL, ROW, SCALAR
from ._half import float16_bits_to_float32, half_format, widen, work_empty, work_zero
from ._math import (
    as_type_of,
    fast_exp2,
    fast_log1p,
)
from ._simd import (
    has_vector_exp,
    log1p_rows_accepts,
    log1p_rows_f32,
    turned_dense_accepts,
    turned_dense_sums,
    turned_sum_accepts,
    turned_sum_exp2,
    turned_sum_exp2_ties,
    turned_ties_accepts,
)
from .reduce import float64_total
from .rows import dense_row, row_chunks, sparse_row, weigh_targets
from .stream import ACCEPT, IGNORED, LOG2E, prefetch_span

_OVERLOAD_ROW = {k: v for k, v in ROW.items() if k != "cache"}

# ------------------------------------------------------------ many short rows
# Per-row loops of a few elements cost more than their arithmetic (loop set-up, remainders,
# one scalar log per row), so rows of at most ``SHORT_ROW_BYTES`` are taken in blocks of
# ``SHORT_BLOCK`` rows and *turned*: the block is copied into a buffer ``(C, rows)`` (by
# in-register tiles for C-contiguous float rows, else column by column), so consecutive rows
# fill the SIMD lanes.  Every statistic is then a
# vectorised loop over rows, repeated for each class: the row maximum, the sum of ``exp``
# relative to it, target sums, and one vectorised ``log1p`` per block.  Tiles also give the
# dense kernel's row maxima and target sums from their registers, in column order as the
# column turn's loops do.
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
#: Fewest columns from which C-contiguous rows are turned by in-register tiles
#: (:func:`turn_tile`) instead of strided gathers.  Measured on AMD EPYC Zen 4, the turn of
#: 10M elements: float32 tiles 1.1x faster at C = 8, 1.4x at C = 24, level at C = 6, slower at 5;
#: float64 tiles 1.2x faster at C = 8, slower at C = 6.
TILE_MIN_COLUMNS_F32 = 7
TILE_MIN_COLUMNS_F64 = 8


#: C-contiguous rows of at least this many bytes have the next block fetched ahead
#: (:func:`_prefetch_block`): every size.  With a bound of 48 bytes (prefetch from C = 12
#: on) the dense logits took 1.08-1.18x as long at C = 4-10 (Intel Xeon, rocketlake).
PREFETCH_ROW_BYTES = 0


def _prefetch_block(x, r0):  # pragma: no cover - replaced by the overload
    """Hint the CPU to fetch rows ``r0 .. r0 + SHORT_BLOCK`` of ``x``, one prefetch per cache
    line, where ``x`` is C-contiguous float32 with rows of at least ``PREFETCH_ROW_BYTES``
    (else nothing).  The dense kernel calls it one block ahead of its turns, for the logits
    and the targets, so that a block's arithmetic overlaps the next block's transfer.

    Why (Intel Xeon, LLVM rocketlake, the dense kernel on 10M float32 elements, paired
    medians of 31-41 interleaved calls, bit-identical): without it, 6.1-6.8 ms at C = 24
    and 32 against 4.7 at C = 16 and 5.3 at C = 48 (the tiles read 16 rows of both arrays
    at the stride of a row, which the hardware prefetchers follow badly); with it 0.76-0.80x
    at C = 24 and 32, 0.91-1.0x at C = 12, 16 and 48, 0.84-0.87x at C = 4-6, 0.86-0.91x at
    C = 10, 0.89-0.93x at C = 7, 0.96-0.97x at C = 2-3, level at C = 8.  The dense
    probabilities kernel: 0.82-0.87x at C = 24-32 and 5, 0.92-1.0x at C = 10 and 12.  Not
    for float64, whose loop is bound by its exp: 0.94x at C = 6 but 1.07x at C = 12 and
    1.11x at C = 24 (the prefetched block and the two turned blocks fill the 48 KiB L1).
    The sparse kernel calls it too, one block ahead of its turn.  Measured back to back it
    did not pay (0.99-1.04x at C = 5, 10 and 24, rocketlake; 1.02-1.04x on 100,000 x 10,
    which stays in L2), but under the benchmark's conditions, other arrays read between
    calls and a pause before each, the sparse loss took 0.89-0.93x as long on 1,000,000 x
    10 (int64 and uint8 labels), 0.82x at C = 24, 0.92x at C = 48, 0.97x at C = 4 and 0.96x
    on 100,000 x 10 (Intel Xeon, emeraldrapids, paired medians of 21-31 shuffled calls).
    Callers test the row size once, outside their block loop (``ahead``): the early return
    below, reached in every block, cost 4-6% at C = 7 and 10, and calling it without the
    test and without that return 2-4% at C = 12-24.
    """
    raise NotImplementedError


@njit(**SCALAR)
def fetches_ahead(x):
    """Whether a block kernel fetches the next block of the 2-D ``x`` ahead
    (:func:`_prefetch_block`): rows of at least ``PREFETCH_ROW_BYTES``.  Each kernel asks
    once, before its block loop (see there why)."""
    return x.shape[1] * x.itemsize >= PREFETCH_ROW_BYTES


@overload(_prefetch_block, jit_options=_OVERLOAD_ROW)
def _prefetch_block_impl(x, r0):
    if not (
        isinstance(x, types.Array) and x.ndim == 2 and x.layout == "C" and x.dtype == types.float32
    ):
        return lambda x, r0: None

    def impl(x, r0):
        n, c = x.shape
        if c * x.itemsize < PREFETCH_ROW_BYTES or r0 >= n:
            return
        prefetch_span(x.reshape(-1), r0 * c, min(n, r0 + SHORT_BLOCK) * c)

    return impl


@njit(**SCALAR)
def turned_rows(c):
    """Rows a turned-block buffer needs for ``c`` columns: whole tiles, because
    :func:`turn_tile` writes all of a tile's rows (those past ``c`` are scratch)."""
    return (c + TILE_F32 - 1) // TILE_F32 * TILE_F32


@njit(**SCALAR)
def chunk_total(out_loss, chunk, per, out_total):
    """``out_total[chunk]``: the float64 sum of the losses of a kernel's chunk ``chunk`` of
    ``per`` blocks, read back while they are still in this core's cache (nothing when
    ``out_total`` is empty).

    The front ends' means and sums add these partials (:data:`rows.ROW_CHUNKS` of them, a
    number that does not depend on the thread count) instead of reading the whole loss
    array again after the kernel: on 1,000,000 losses that serial pass took 0.24-0.34 ms, 7-9%
    of the 1,000,000 x 10 sparse loss (Intel Xeon, rocketlake), half of it reading lines the
    other core had written.
    """
    if out_total.shape[0] == 0:
        return
    lo = chunk * per * SHORT_BLOCK
    hi = min(out_loss.shape[0], lo + per * SHORT_BLOCK)
    out_total[chunk] = float64_total(out_loss[lo:hi])


@njit(**ROW)
def _turn_plain(x, r0, nr, like, out, raw):
    for j in range(x.shape[1]):
        col = x[r0 : r0 + nr, j]
        for r in range(nr):
            out[j, r] = as_type_of(widen(col[r]), like)


@njit(**ROW)
def _turn_float16(x, r0, nr, like, out, raw):
    # Gathered elements do not vectorise through the half -> float conversion (measured 4x
    # slower than float32); turning the raw 16 bits first, then converting the contiguous
    # block, is as fast as the float32 turn.
    for j in range(x.shape[1]):
        col = x[r0 : r0 + nr, j]
        for r in range(nr):
            raw[j, r] = col[r]
    for j in range(x.shape[1]):
        for r in range(nr):
            out[j, r] = float16_bits_to_float32(raw[j, r])


#: What a turn also computes per row of the block (``acc`` of :func:`_turn_block`, chosen at
#: compile time): nothing, the maximum, the sum.
NO_STAT, ROW_MAX, ROW_SUM = 0, 1, 2


@njit(**ROW)
def _no_stat(out, c, nr, acc):
    pass


def _tile_plan(x, work):
    """``(tile width, fewest columns)`` when a 2-D array type ``x`` turned into ``work`` (a
    float type) goes by in-register tiles from that many columns on, else None (typing
    time)."""
    if x.layout != "C" or x.dtype not in (types.float32, types.float64) or x.dtype != work:
        return None
    least = TILE_MIN_COLUMNS_F32 if x.dtype == types.float32 else TILE_MIN_COLUMNS_F64
    return tile_width(x.dtype), least


def _turn_block(x, r0, nr, like, out, raw, acc, stat):  # pragma: no cover - the overload's
    """``out[j, r] = x[r0 + r, j]`` in the type of ``like``: rows into SIMD lanes; ``stat`` (a
    constant) ``ROW_MAX`` / ``ROW_SUM`` also makes ``acc[r]`` the row's maximum / sum, from
    the tiles' registers where tiles are used (``acc``: a work array of ``SHORT_BLOCK``).

    Column by column, so the writes are contiguous and the strided reads vectorise as
    gathers (measured 3x faster than row by row for C = 10); C-contiguous float32/float64
    rows turned into their own type go by in-register tiles instead, so ``out`` needs
    :func:`turned_rows` rows.  Any dtype and strides; ``raw`` (uint16, at least ``out``'s
    shape) is scratch for float16 input.
    """
    raise NotImplementedError


@overload(
    _turn_block, prefer_literal=True, jit_options={k: v for k, v in ROW.items() if k != "cache"}
)
def _turn_block_impl(x, r0, nr, like, out, raw, acc, stat):
    if not isinstance(stat, types.IntegerLiteral):
        return None  # a constant, so that each statistic compiles its own turn
    which = stat.literal_value
    block_stat = (_no_stat, _turned_max, _turned_total)[which]
    if half_format(x.dtype) == "float16":

        def turn_half(x, r0, nr, like, out, raw, acc, stat):
            _turn_float16(x, r0, nr, like, out, raw)
            block_stat(out, x.shape[1], nr, acc)

        return turn_half
    plan = _tile_plan(x, out.dtype)
    if plan is not None:
        width, least = plan
        # the intrinsic itself, not a function around it: LLVM does not inline a function of
        # that size, and a call per tile made C = 10 and 24 10-30% slower (measured)
        tile = (turn_tile, turn_tile_max, turn_tile_sum)[which]

        def turn(x, r0, nr, like, out, raw, acc, stat):
            n, c = x.shape
            # narrow rows go to the column turn here, the one place that chooses
            if c < least:
                _turn_plain(x, r0, nr, like, out, raw)
                block_stat(out, c, nr, acc)
                return
            # tiles of whole rows while every read of a tile stays inside x, then the columns
            done = 0
            for rr in range(0, nr - width + 1, width):
                if (r0 + rr + width) * c + width > n * c:
                    break
                for j0 in range(0, c, width):
                    tile(x, r0 + rr, j0, out, rr, acc)
                done = rr + width
            if done < nr:
                _turn_plain(x, r0 + done, nr - done, like, out[:, done:], raw)
                block_stat(out[:, done:], c, nr - done, acc[done:])

        return turn

    def turn_plain(x, r0, nr, like, out, raw, acc, stat):
        _turn_plain(x, r0, nr, like, out, raw)
        block_stat(out, x.shape[1], nr, acc)

    return turn_plain


def _turns_by_tiles(x, like):  # pragma: no cover - replaced by the overload
    """Whether :func:`_turn_block` turns ``x`` into the type of ``like`` by in-register tiles
    (its statistics then come from the registers, else from a pass over the turned block)."""
    raise NotImplementedError


@overload(_turns_by_tiles, jit_options={k: v for k, v in ROW.items() if k != "cache"})
def _turns_by_tiles_impl(x, like):
    plan = _tile_plan(x, like)
    if plan is not None:
        least = plan[1]
        return lambda x, like: x.shape[1] >= least
    return lambda x, like: False


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


@njit(**SCALAR)
def _turned_total(bt, c, nr, total):
    """Row sums ``total`` of a turned block, in column order (no reassociation: the tiles sum
    in that order, and a row's sum must not depend on which of the two turned it)."""
    for r in range(nr):
        total[r] = bt[0, r]
    for j in range(1, c):
        for r in range(nr):
            total[r] += bt[j, r]


def _turned_sum_exp(bz, c, nr, m, s, ties):  # pragma: no cover - replaced by the overload
    """``s[r] = sum_j exp(z[r, j] - m[r])`` over the terms below the maximum, ``ties[r]`` the
    number of terms at it (each exactly 1): ``s' = s + (ties - 1)`` leaves one out.

    Counting ties instead of finding the maximum's position keeps the loop free of
    data-dependent branches (measured: a branchy arg-max ran 5x slower on random rows).
    """
    raise NotImplementedError


@overload(_turned_sum_exp, jit_options=_OVERLOAD_ROW)
def _turned_sum_exp_impl(bz, c, nr, m, s, ties):
    # float32 or float64 on an AVX-512 or AVX2 CPU: the explicit loop over the whole buffer
    # (kernels/_simd.py); else the vectorised scalar loop over the block's nr rows
    if has_vector_exp() and turned_ties_accepts(bz, c, m, s, ties):
        return lambda bz, c, nr, m, s, ties: turned_sum_exp2_ties(bz, c, m, s, ties)
    return lambda bz, c, nr, m, s, ties: _turned_sum_exp_scalar(bz, c, nr, m, s, ties)


@njit(**ROW)
def _turned_sum_exp_scalar(bz, c, nr, m, s, ties):
    zero = as_type_of(0.0, m[0])
    one = as_type_of(1.0, m[0])
    log2e = as_type_of(LOG2E, m[0])
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


def _turned_dense_sums(bz, bt, c, nr, m, s, ties, t_sum, tz):  # pragma: no cover - overload
    """:func:`_turned_dense_sums_scalar` for a block whose target sums the turn already took,
    by the explicit vector loop where it can."""
    raise NotImplementedError


@overload(_turned_dense_sums, jit_options=_OVERLOAD_ROW)
def _turned_dense_sums_impl(bz, bt, c, nr, m, s, ties, t_sum, tz):
    # float32 or float64 on an AVX-512 or AVX2 CPU: the explicit loop over the whole buffer
    # (kernels/_simd.py).  No flag for the target sums: a block that still needs them calls
    # the scalar loop itself, since with a flag known only at run time LLVM kept both loops
    # in the kernel's block loop and the plain 1,000,000 x 10 dense loss took 1.12-1.15x as
    # long (Intel Xeon, rocketlake).
    if has_vector_exp() and turned_dense_accepts(bz, bt, c, m, s, ties, tz):
        return lambda bz, bt, c, nr, m, s, ties, t_sum, tz: turned_dense_sums(
            bz, bt, c, m, s, ties, tz
        )
    return lambda bz, bt, c, nr, m, s, ties, t_sum, tz: _turned_dense_sums_scalar(
        bz, bt, c, nr, m, s, ties, t_sum, tz, False
    )


@njit(**ROW)
def _turned_dense_sums_scalar(bz, bt, c, nr, m, s, ties, t_sum, tz, add_t_sum):
    """:func:`_turned_sum_exp` and the target sums in one pass over the block (each element's
    ``z - m`` computed once): ``tz[r] = sum_j t (z - m)`` where ``t != 0`` (never ``0 *
    -inf``) and, if ``add_t_sum`` (the turn did not), ``t_sum[r] = sum_j t``."""
    zero = as_type_of(0.0, m[0])
    one = as_type_of(1.0, m[0])
    log2e = as_type_of(LOG2E, m[0])
    for r in range(nr):
        s[r] = zero
        ties[r] = zero
        tz[r] = zero
    if add_t_sum:
        for r in range(nr):
            t_sum[r] = zero
    for j in range(c):
        for r in range(nr):
            d = bz[j, r] - m[r]
            at_max = as_type_of(d == zero, zero)
            s[r] += fast_exp2(d * log2e) * (one - at_max)
            ties[r] += at_max
            t = bt[j, r]
            tz[r] += t * d if t != zero else zero
            if add_t_sum:
                t_sum[r] += t


@njit(**ROW)
def _turned_weigh(bt, c, nr, w):
    """``t *= w_j`` for each class (class weights multiply the targets)."""
    for j in range(c):
        wj = as_type_of(w[j], bt[0, 0])
        for r in range(nr):
            bt[j, r] *= wj


def _log1p_into(s, ties, nr, out):  # pragma: no cover - replaced by the overload
    """``out = log1p(s + ties - 1)`` for a block's rows (see :func:`_log1p_into_scalar`)."""
    raise NotImplementedError


@overload(_log1p_into, jit_options=_OVERLOAD_ROW)
def _log1p_into_impl(s, ties, nr, out):
    # float32 with AVX-512 or AVX2: 16 or 8 lanes (kernels/_simd.py), over the whole block
    # buffer
    if has_vector_exp() and log1p_rows_accepts(s, ties, out):
        return lambda s, ties, nr, out: log1p_rows_f32(s, ties, out)
    return lambda s, ties, nr, out: _log1p_into_scalar(s, ties, nr, out)


@njit(**SCALAR)
def _log1p_into_scalar(s, ties, nr, out):
    """``out = log1p(s + ties - 1)`` (``ties - 1`` is an exact small integer, usually 0):
    one vectorised loop; contract-only flags keep log1p exact."""
    one = as_type_of(1.0, s[0])
    for r in range(nr):
        out[r] = fast_log1p(s[r] + (ties[r] - one))


@njit(**ROW)
def _turned_lse_parts(bz, c, nr, m, s, ties, log_s):
    """Per row of a turned block: the maximum ``m``, the sums of :func:`_turned_sum_exp` and
    ``log s = log1p(s')``, so that ``lse = m + log s`` (the sparse kernel's; the dense one
    fuses the sums with its target sums in :func:`_turned_dense_sums`)."""
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
    statistics, a label outside the row), and the count of them is returned (0: no scan).
    The label's logit is read at a clipped position.

    Contract-only flags: reassociation would turn ``log s + (m - z_y)`` into
    ``(log s + m) - z_y`` and cancel.
    """
    c = bz.shape[0]
    block_labels, block_loss = labels[r0 : r0 + nr], out_loss[r0 : r0 + nr]
    count = 0
    for r in range(nr):
        y = block_labels[r]
        inside = (y >= 0) & (y < c)
        # float64 as in the options' loop, so asking for the lse does not move a loss by an ulp
        loss = np.float64(log_s[r]) + (np.float64(m[r]) - np.float64(bz[y if inside else 0, r]))
        block_loss[r] = loss if y != IGNORED else 0.0
        again = not (_finite(s[r]) & _finite(shift_sum[r]) & (inside | (y == IGNORED)))
        redo[r] = again
        count += again
    return count


@njit(**SCALAR)
def block_outside(labels, r0, nr, c):
    """How many of the labels of rows ``r0 .. r0 + nr`` lie outside ``[0, c)``, ``IGNORED``
    ones included.

    The sparse kernels' count for the front ends that leave the label range check to the
    kernel pass (``_engine.sparse_losses``): the separate check read all labels again before
    the kernel (1,000,000 int64 labels: 0.29-0.55 ms, 7-13% of the 1,000,000 x 10 sparse
    loss), where a block's labels counted while they are in L1 add 0.05 ms (Intel Xeon,
    rocketlake; counted per chunk after its blocks, 0.25 ms).  Indexing a slice from 0 lets
    the loop vectorise (a loop from ``r0`` kept Numba's negative-index wrap: 5x slower).
    The kernels never read outside a row whatever the label.
    """
    block_labels = labels[r0 : r0 + nr]
    count = 0
    for r in range(nr):
        y = block_labels[r]
        count += (y < 0) | (y >= c)
    return count


@njit(**SCALAR)
def _take_label_logits(bz, labels, r0, nr, shift, ties):
    """``shift[r] = z[r, y_r]``, the label's logit (column 0 for a label outside the row),
    which is then replaced by ``-inf`` in the turned block: its term ``exp(z_y - z_y) = 1``
    leaves the sum exactly, so :func:`_turned_sum_exp_all` needs no per-element test
    (measured 30% faster than counting ties); ``ties[r] = 1`` says one term is left out."""
    c = bz.shape[0]
    one = as_type_of(1.0, ties[0])
    block_labels = labels[r0 : r0 + nr]
    for r in range(nr):
        y = block_labels[r]
        k = y if (y >= 0) & (y < c) else 0
        shift[r] = bz[k, r]
        bz[k, r] = -np.inf
        ties[r] = one


@njit(**SCALAR)
def _put_back_label_logits(bz, labels, r0, nr, shift):
    """Undo :func:`_take_label_logits` (a cheaper, smaller-to-compile way back to the turned
    block than turning it again)."""
    c = bz.shape[0]
    block_labels = labels[r0 : r0 + nr]
    for r in range(nr):
        y = block_labels[r]
        bz[y if (y >= 0) & (y < c) else 0, r] = shift[r]


def _turned_sum_exp_all(bz, c, nr, shift, s):  # pragma: no cover - replaced by the overload
    """``s[r] = sum_j exp(z[r, j] - shift[r])`` over every term of a turned block."""
    raise NotImplementedError


@overload(_turned_sum_exp_all, jit_options=_OVERLOAD_ROW)
def _turned_sum_exp_all_impl(bz, c, nr, shift, s):
    # float32 or float64 on an AVX-512 or AVX2 CPU: the explicit loop over all of the block's
    # columns (kernels/_simd.py); else the vectorised scalar loop over its nr rows
    if has_vector_exp() and turned_sum_accepts(bz, c, shift, s):
        return lambda bz, c, nr, shift, s: turned_sum_exp2(bz, c, shift, s)
    return lambda bz, c, nr, shift, s: _turned_sum_exp_all_scalar(bz, c, nr, shift, s)


@njit(**ROW)
def _turned_sum_exp_all_scalar(bz, c, nr, shift, s):
    log2e = as_type_of(LOG2E, shift[0])
    for r in range(nr):
        s[r] = as_type_of(0.0, shift[0])
    for j in range(c):
        for r in range(nr):
            s[r] += fast_exp2((bz[j, r] - shift[r]) * log2e)


@njit(**SCALAR)
def _sparse_label_losses(labels, r0, nr, c, zy, s, log_s, w, out_loss, out_lse, taken):
    """Sparse losses of a turned block summed relative to the label's logit ``zy``: the loss
    is ``log1p(s')`` itself (times the class weight), the lse ``zy + log1p(s')``.
    ``taken[r]`` is False for a row it cannot take: a sum above ``ACCEPT`` (a logit far
    above the label's) or not finite, a label outside the row; an ignored row only when its
    lse is asked for.  Returns how many; the kernel then sums those rows again relative to
    their maxima."""
    weighted = w.shape[0] == c
    keep_lse = out_lse.shape[0] > 0
    block_labels, block_loss = labels[r0 : r0 + nr], out_loss[r0 : r0 + nr]
    block_lse = out_lse[r0 : r0 + nr]  # empty when no lse is kept
    count = 0
    for r in range(nr):
        y = block_labels[r]
        ignored = y == IGNORED
        inside = (y >= 0) & (y < c)
        loss = np.float64(log_s[r])
        if weighted:
            loss *= w[y if inside else 0]
        block_loss[r] = loss if not ignored else 0.0
        if keep_lse:
            block_lse[r] = np.float64(zy[r]) + np.float64(log_s[r])
        # s <= ACCEPT is False for NaN; a +inf label logit leaves s finite but is not
        fine = (s[r] <= ACCEPT) & _finite(zy[r]) & (inside | ignored)
        ok = fine | (ignored & (not keep_lse))
        taken[r] = ok
        count += not ok
    return count


@njit(**SCALAR)
def _restore_taken(taken, r0, nr, kept_loss, kept_lse, out_loss, out_lse, redo):
    """Put back the results of the rows the label-relative pass took (the block was summed
    again for the others), so every row's result depends on that row alone."""
    keep_lse = out_lse.shape[0] > 0
    block_loss, block_lse = out_loss[r0 : r0 + nr], out_lse[r0 : r0 + nr]
    for r in range(nr):
        if taken[r]:
            block_loss[r] = kept_loss[r]
            if keep_lse:
                block_lse[r] = kept_lse[r]
            redo[r] = False


@njit(**SCALAR)
def _sparse_short_options(
    bz, labels, r0, nr, m, log_s, shift_sum, smoothing, w, w_total, out_loss, out_lse
):
    """Class weights, smoothing and lse on top of :func:`_sparse_short_losses` (rows it
    marked for redo are overwritten later)."""
    c = bz.shape[0]
    weighted = w.shape[0] == c
    keep_lse = out_lse.shape[0] > 0
    block_labels, block_loss = labels[r0 : r0 + nr], out_loss[r0 : r0 + nr]
    block_lse = out_lse[r0 : r0 + nr]
    for r in range(nr):
        y = block_labels[r]
        ls = np.float64(log_s[r])
        if keep_lse:
            block_lse[r] = np.float64(m[r]) + ls
        if y < 0 or y >= c:
            continue
        loss = ls + (np.float64(m[r]) - np.float64(bz[y, r]))
        if weighted:
            loss *= w[y]
        if smoothing != 0.0:
            loss = _short_smooth(smoothing, loss, ls, np.float64(shift_sum[r]), w_total, c)
        block_loss[r] = loss


@njit(**SCALAR)
def _dense_short_finish(
    r0, nr, m, s, log_s, t_sum, tz, shift_sum, smoothing, w_total, c, out_loss, out_lse, redo
):
    """Dense losses of a turned block with options, as :func:`_sparse_short_losses`; returns
    how many rows are marked for the per-row code."""
    keep_lse = out_lse.shape[0] > 0
    block_loss, block_lse = out_loss[r0 : r0 + nr], out_lse[r0 : r0 + nr]
    count = 0
    for r in range(nr):
        ls = np.float64(log_s[r])
        loss = np.float64(t_sum[r]) * ls - np.float64(tz[r])  # tz <= 0 for t >= 0
        if smoothing != 0.0:
            loss = _short_smooth(smoothing, loss, ls, np.float64(shift_sum[r]), w_total, c)
        block_loss[r] = loss
        if keep_lse:
            block_lse[r] = np.float64(m[r]) + ls
        fine = _finite(s[r]) & _finite(t_sum[r]) & _finite(tz[r]) & _finite(shift_sum[r])
        redo[r] = not fine
        count += not fine
    return count


@njit(**PARALLEL)
def sparse_logits_short_rows(
    z, labels, smoothing, class_weights, out_loss, out_lse, out_total, out_outside
):
    """:func:`sparse_logits` for many short rows (at most ``SHORT_ROW_BYTES``), any strides, with
    class weights and smoothing but no soft-cap or class mask (the engine sends those to
    :func:`sparse_logits`).

    Without smoothing, the sums are taken relative to the label's logit, so ``lse - z_y =
    log1p(s')`` with ``s' = sum_{j != y} exp(z_j - z_y)`` and no pass for the row maximum;
    rows with ``s' > ACCEPT`` (a logit far above the label's; the same bound as the guessed
    shifts of the per-row kernels), a non-finite sum or a label outside the row are summed
    again as below (their block is, and only their results are kept).  With smoothing, per
    row from the turned block (see the section comment): ``lse - z_y = log1p(s') + (m -
    z_y)``, both terms non-negative.
    Rows with NaN or infinite statistics, and labels outside the row (never read), go to
    the per-row code.  ``out_total`` (float64, ``ROW_CHUNKS``, or empty to skip) receives
    the chunks' loss sums (:func:`chunk_total`), ``out_outside`` (int64, the same) their
    counts of labels outside the row (:func:`block_outside`).
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    smoothed = smoothing != 0.0
    options = smoothed or keep_lse or class_weights.shape[0] == c
    w_total = _weight_total(class_weights, c)
    counting = out_outside.shape[0] > 0
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        like = work_zero(z)  # the type computed in, without reading z
        tiles_z = work_empty((turned_rows(c), SHORT_BLOCK), z)
        bz = tiles_z[:c]
        m = work_empty(SHORT_BLOCK, z)
        s = work_empty(SHORT_BLOCK, z)
        ties = work_empty(SHORT_BLOCK, z)
        log_s = work_empty(SHORT_BLOCK, z)
        shift_sum = work_empty(SHORT_BLOCK, z)
        shift_sum[:] = like  # stays 0 without smoothing
        redo = np.empty(SHORT_BLOCK, np.bool_)
        taken = np.zeros(SHORT_BLOCK, np.bool_)
        kept_loss = np.empty(SHORT_BLOCK, out_loss.dtype)
        kept_lse = np.empty(SHORT_BLOCK, out_lse.dtype)
        raw = np.empty((c, SHORT_BLOCK), np.uint16)
        outside = 0
        ahead = fetches_ahead(z)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            if counting:
                outside += block_outside(labels, r0, nr, c)
            _turn_block(z, r0, nr, like, tiles_z, raw, m, NO_STAT)
            if ahead:
                _prefetch_block(z, r0 + SHORT_BLOCK)
            again = 1
            if not smoothed:
                # Shifting by the label's logit makes the loss log1p(s') and spares the
                # pass for the row maximum; if a row cannot be taken, the block is summed
                # again relative to its maxima below and the taken rows' results put back.
                _take_label_logits(bz, labels, r0, nr, m, ties)
                _turned_sum_exp_all(bz, c, nr, m, s)
                _log1p_into(s, ties, nr, log_s)
                again = _sparse_label_losses(
                    labels, r0, nr, c, m, s, log_s, class_weights, out_loss, out_lse, taken
                )
                if again == 0:
                    continue
                kept_loss[:nr] = out_loss[r0 : r0 + nr]
                if keep_lse:
                    kept_lse[:nr] = out_lse[r0 : r0 + nr]
                _put_back_label_logits(bz, labels, r0, nr, m)
            _turned_lse_parts(bz, c, nr, m, s, ties, log_s)
            if smoothed:
                _turned_shift_sum(bz, c, nr, m, class_weights, shift_sum)
            again = _sparse_short_losses(bz, labels, r0, nr, m, s, log_s, shift_sum, out_loss, redo)
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
            if not smoothed:
                _restore_taken(taken, r0, nr, kept_loss, kept_lse, out_loss, out_lse, redo)
            if again == 0:
                continue
            for r in range(nr):
                if redo[r]:  # rare: NaN, inf, a label outside the row
                    i = r0 + r
                    loss, lse = sparse_row(z[i], labels[i], smoothing, class_weights)
                    out_loss[i] = loss
                    if keep_lse:
                        out_lse[i] = lse
        chunk_total(out_loss, chunk, per, out_total)
        if counting:
            out_outside[chunk] = outside


@njit(**PARALLEL)
def dense_logits_short_rows(z, t, smoothing, class_weights, out_loss, out_lse, out_total):
    """:func:`dense_logits` for many short rows (at most ``SHORT_ROW_BYTES``), any strides and
    target dtype, with class weights and smoothing but no soft-cap or class mask.

    Per row from the turned blocks of logits and targets: ``T log1p(s') - sum t (z - m)``
    with ``T = sum t`` (weights multiply the targets), every term non-negative for
    non-negative targets.  Rows with NaN or infinite statistics go to the per-row code.
    ``out_total`` as for :func:`sparse_logits_short_rows`.
    """
    n, c = z.shape
    keep_lse = out_lse.shape[0] == n
    weighted = class_weights.shape[0] == c
    smoothed = smoothing != 0.0
    w_total = _weight_total(class_weights, c)
    n_blocks = (n + SHORT_BLOCK - 1) // SHORT_BLOCK
    per = row_chunks(n_blocks)
    for chunk in prange((n_blocks + per - 1) // per):
        like = work_zero(z)  # the type computed in, without reading z
        tiles_z = work_empty((turned_rows(c), SHORT_BLOCK), z)
        tiles_t = work_empty((turned_rows(c), SHORT_BLOCK), z)
        bz, bt = tiles_z[:c], tiles_t[:c]
        m = work_empty(SHORT_BLOCK, z)
        s = work_empty(SHORT_BLOCK, z)
        ties = work_empty(SHORT_BLOCK, z)
        log_s = work_empty(SHORT_BLOCK, z)
        t_sum = work_empty(SHORT_BLOCK, z)
        tz = work_empty(SHORT_BLOCK, z)
        shift_sum = work_empty(SHORT_BLOCK, z)
        shift_sum[:] = like  # stays 0 without smoothing
        redo = np.empty(SHORT_BLOCK, np.bool_)
        tbuf = work_empty(c, z)
        raw = np.empty((c, SHORT_BLOCK), np.uint16)
        sum_in_turn = not weighted and _turns_by_tiles(t, like)
        # decided once: the prefetch's own early return, tested in the block loop, made
        # C = 7 and 10 1.04-1.06x slower (Intel Xeon, rocketlake)
        ahead = fetches_ahead(z)
        for b in range(chunk * per, min(n_blocks, (chunk + 1) * per)):
            r0 = b * SHORT_BLOCK
            nr = min(SHORT_BLOCK, n - r0)
            # the row maxima come with the turn, and the target sums where tiles turn the
            # targets (from the tiles' registers; class weights multiply the targets first)
            _turn_block(z, r0, nr, like, tiles_z, raw, m, ROW_MAX)
            if ahead:
                _prefetch_block(z, r0 + SHORT_BLOCK)
                _prefetch_block(t, r0 + SHORT_BLOCK)
            if sum_in_turn:
                _turn_block(t, r0, nr, like, tiles_t, raw, t_sum, ROW_SUM)
            else:
                _turn_block(t, r0, nr, like, tiles_t, raw, t_sum, NO_STAT)
                if weighted:
                    _turned_weigh(bt, c, nr, class_weights)
            # over the whole buffer, rows past nr included (their results are not used):
            # a short last block would otherwise end in a scalar loop whose rounding differs
            # by an ulp from the vector one (a row's loss must not depend on its block)
            if sum_in_turn:
                _turned_dense_sums(bz, bt, c, SHORT_BLOCK, m, s, ties, t_sum, tz)
            else:
                _turned_dense_sums_scalar(bz, bt, c, SHORT_BLOCK, m, s, ties, t_sum, tz, True)
            _log1p_into(s, ties, nr, log_s)
            if smoothed:
                _turned_shift_sum(bz, c, nr, m, class_weights, shift_sum)
            again = _dense_short_finish(
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
            if again == 0:
                continue
            for r in range(nr):
                if redo[r]:  # rare: NaN, inf, non-finite targets
                    i = r0 + r
                    if weighted:
                        weigh_targets(t[i], class_weights, tbuf)
                        loss, lse = dense_row(z[i], tbuf, smoothing, class_weights)
                    else:
                        loss, lse = dense_row(z[i], t[i], smoothing, class_weights)
                    out_loss[i] = loss
                    if keep_lse:
                        out_lse[i] = lse
        chunk_total(out_loss, chunk, per, out_total)
