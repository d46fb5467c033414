"""The short-row block kernels (rows of at most ``SHORT_ROW_BYTES``) against the per-row
kernels, which own the edge rules, and against the reference: every option, layout, block
boundary and special row, so the turned-block arithmetic can never drift from the rest."""

import contextlib
import ctypes
import mmap
import sys

import numpy as np
import pytest
from numba import njit

from xent import kernels
from xent._engine import kernel_view
from xent.kernels.short_rows import ROW_MAX, ROW_SUM, SHORT_BLOCK, _turn_block, turned_rows

import reference
from helpers import per_thread_count, tolerances

#: The kernels' ``out_total`` and the sparse ones' ``out_outside`` left empty: no chunk sums.
NO_TOTAL = np.empty(0)
NO_OUTSIDE = np.empty(0, np.int64)

N = 3 * 64 + 5  # three full blocks and a partial one
NO_MASK = np.empty((0, 0), np.bool_)


def _layout(a, kind):
    if kind == "C":
        return np.ascontiguousarray(a)
    if kind == "F":
        return np.asfortranarray(a)
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)  # every other column
    wide[:, ::2] = a
    return wide[:, ::2]


def _logits(rng, c, dtype):
    z = rng.standard_normal((N, c)) * 4.0
    labels = rng.integers(0, c, N)
    labels[[5, 70, N - 1]] = kernels.IGNORED
    special = set()
    if c >= 2:
        z[0, 1] = np.nan
        z[63, 0] = np.inf
        z[64, (labels[64] + 1) % c] = -np.inf  # a -inf logit away from the label
        z[100, :] = -np.inf
        z[101, :] = 1e30 if dtype == np.float32 else 1e300
        z[101, labels[101]] = -1e30 if dtype == np.float32 else -1e300
        z[102, labels[102]] = -np.inf  # the label's own logit is -inf
        z[130, :] = 7.0  # all tied at the maximum
        special = {0, 63, 64, 100, 101, 102}
    return z.astype(dtype), labels, special


def _weights(rng, c, weighted):
    if not weighted:
        return np.empty(0)
    w = rng.uniform(0.2, 2.0, c)
    w[0] = 0.0
    return w


def _same(a, b, dtype):
    rtol, atol = tolerances(dtype)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


# Each (dtype, layout, target dtype) is a separate compilation of four parallel kernels, so
# the grid spans them sparingly: Fortran order only in float32 (its strides are the
# strided case's), uint8 targets only C-contiguous.
LAYOUTS = [
    (np.float32, "C"),
    (np.float32, "F"),
    (np.float32, "strided"),
    (np.float64, "C"),
    (np.float64, "strided"),
]


@pytest.mark.parametrize("dtype, layout", LAYOUTS)
@pytest.mark.parametrize("c", [1, 2, 7, 24])
@pytest.mark.parametrize(
    "smoothing, weighted", [(0.0, False), (0.15, False), (0.0, True), (0.15, True)]
)
def test_sparse_short_rows_match_per_row_kernel_and_reference(
    dtype, c, layout, smoothing, weighted
):
    rng = np.random.default_rng(c * 7 + int(weighted))
    z, labels, special = _logits(rng, c, dtype)
    z = _layout(z, layout)
    w = _weights(rng, c, weighted)
    before = z.copy()
    got, got_lse = np.empty(N, dtype), np.empty(N, dtype)
    kernels.sparse_logits_short_rows(z, labels, smoothing, w, got, got_lse, NO_TOTAL, NO_OUTSIDE)
    want, want_lse = np.empty(N, dtype), np.empty(N, dtype)
    kernels.sparse_logits(z, labels, smoothing, w, 0.0, NO_MASK, want, want_lse)
    np.testing.assert_array_equal(z, before)
    _same(got, want, dtype)
    _same(got_lse, want_lse, dtype)
    plain = np.array([i not in special for i in range(N)])
    ref = reference.torch_cross_entropy(
        z[plain].astype(np.float64),
        labels[plain],
        weight=w if weighted else None,
        ignore_index=-1,
        reduction="none",
        label_smoothing=smoothing,
    )
    _same(got[plain], ref, dtype)
    # without the lse output the kernel takes its plain path: same losses
    alone = np.empty(N, dtype)
    kernels.sparse_logits_short_rows(
        z, labels, smoothing, w, alone, np.empty(0, dtype), NO_TOTAL, NO_OUTSIDE
    )
    np.testing.assert_array_equal(alone, got)


@pytest.mark.parametrize(
    "dtype, layout, target_dtype",
    [(d, lay, "same") for d, lay in LAYOUTS] + [(np.float32, "C", "uint8")],
)
@pytest.mark.parametrize("c", [1, 2, 7, 24])
@pytest.mark.parametrize("smoothing, weighted", [(0.0, False), (0.15, True)])
def test_dense_short_rows_match_per_row_kernel_and_reference(
    dtype, c, layout, target_dtype, smoothing, weighted
):
    rng = np.random.default_rng(c * 11 + int(weighted))
    z, labels, special = _logits(rng, c, dtype)
    labels = np.where(labels < 0, 0, labels)
    if target_dtype == "uint8":
        t = np.eye(c, dtype=np.uint8)[labels]
    else:
        t = rng.dirichlet(np.ones(c), N).astype(dtype)
        t[::3] = np.eye(c, dtype=dtype)[labels[::3]]  # some one-hot rows
        t[7, :] = 0.0  # a row with no target mass
        t[8, 0] = np.inf  # a non-finite target
        special |= {8}
    z, t = _layout(z, layout), _layout(t, layout)
    w = _weights(rng, c, weighted)
    got, got_lse = np.empty(N, dtype), np.empty(N, dtype)
    kernels.dense_logits_short_rows(z, t, smoothing, w, got, got_lse, NO_TOTAL)
    want, want_lse = np.empty(N, dtype), np.empty(N, dtype)
    kernels.dense_logits(z, t, smoothing, w, 0.0, NO_MASK, want, want_lse)
    _same(got, want, dtype)
    _same(got_lse, want_lse, dtype)
    plain = np.array([i not in special for i in range(N)])
    ref = reference.torch_cross_entropy(
        z[plain].astype(np.float64),
        t[plain].astype(np.float64),
        weight=w if weighted else None,
        reduction="none",
        label_smoothing=smoothing,
    )
    _same(got[plain], ref, dtype)


def _probabilities(rng, c, dtype):
    """Rows of probabilities with the rows the probability kernels treat specially: NaN, a
    zero row (0 / 0), a row whose sum is subnormal (its scale 1 / sum overflows: divided, as
    the per-row kernel does), entries outside [0, 1], one row tiny against the clip."""
    p = rng.dirichlet(np.ones(c), N)
    p[1, 0] = np.nan
    p[2, :] = 0.0
    p[3, :] = 1e-42 if dtype != np.float64 else 1e-310
    p[4, 0] = 3.0
    p[4, -1] = -0.5
    p[65, :] = 1e-9
    p[66, 0] = 1.0 - 1e-9  # the rest of row 66 below the clip
    p[10, 0] = np.nan  # not renormalised, a NaN whose target is 0 adds nothing
    return p.astype(dtype)


@pytest.mark.parametrize(
    "dtype, layout, target_dtype",
    [(d, lay, "same") for d, lay in LAYOUTS]
    + [(np.float32, "C", "uint8"), (np.float16, "C", "same")],
)
@pytest.mark.parametrize("c", [1, 2, 10, 24])
@pytest.mark.parametrize("smoothing, renormalize", [(0.0, True), (0.0, False), (0.1, False)])
def test_dense_probs_short_rows_match_per_row_kernel_and_reference(
    dtype, c, layout, target_dtype, smoothing, renormalize
):
    rng = np.random.default_rng(c * 13 + int(renormalize))
    p = _probabilities(rng, c, dtype)
    labels = rng.integers(0, c, N)
    labels[10] = c - 1
    if target_dtype == "uint8":
        t = np.eye(c, dtype=np.uint8)[labels]
    else:
        t = rng.dirichlet(np.ones(c), N).astype(dtype)
        t[::3] = np.eye(c, dtype=dtype)[labels[::3]]  # some one-hot rows
        t[10] = np.eye(c, dtype=dtype)[c - 1]
        t[7, :] = 0.0  # no target mass
        t[8, 0] = np.inf  # a non-finite target
        t[9, :] = 0.0
        t[9, -1] = 0.5  # a single target off the one-hot value
    p, t = _layout(p, layout), _layout(t, layout)
    work = np.float64 if dtype == np.float64 else np.float32
    lo, hi = work(1e-7), work(1.0) - work(1e-7)
    got, want = np.empty(N, work), np.empty(N, work)
    kp, kt = kernel_view(p), kernel_view(t)  # float16 as its bits
    kernels.dense_probs_short_rows(kp, kt, smoothing, lo, hi, renormalize, got, NO_TOTAL)
    kernels.dense_probs(kp, kt, smoothing, lo, hi, renormalize, want)
    _same(got, want, work)
    wide = p.astype(np.float64)
    ref = reference.categorical_crossentropy(
        t.astype(np.float64), wide, label_smoothing=smoothing, renormalize=renormalize, dtype=work
    )
    plain = np.ones(N, bool)
    plain[3] = False  # a subnormal sum: the float32 division is inexact there
    _same(got[plain], ref[plain], work)
    # a row's result is its own: the same rows in other block positions, bit for bit
    later = np.empty(N - 37, work)
    kernels.dense_probs_short_rows(
        kp[37:], kt[37:], smoothing, lo, hi, renormalize, later, NO_TOTAL
    )
    np.testing.assert_array_equal(later, got[37:])


@pytest.mark.parametrize(
    "dtype, layout, label_dtype",
    [(d, lay, np.int64) for d, lay in LAYOUTS]
    + [(np.float32, "C", np.uint8), (np.float16, "C", np.int64)],
)
@pytest.mark.parametrize("c", [1, 2, 10, 24])
@pytest.mark.parametrize("renormalize", [True, False])
def test_sparse_probs_short_rows_match_per_row_kernel_and_reference(
    dtype, c, layout, label_dtype, renormalize
):
    rng = np.random.default_rng(c * 17 + int(renormalize))
    p = _layout(_probabilities(rng, c, dtype), layout)
    labels = rng.integers(0, c, N)
    if label_dtype == np.int64:
        labels[[5, 70, N - 1]] = kernels.IGNORED
        labels[[6, 64]] = [c, -3]  # outside [0, C): NaN, nothing read
    labels = labels.astype(label_dtype)
    work = np.float64 if dtype == np.float64 else np.float32
    lo, hi = work(1e-7), work(1.0) - work(1e-7)
    got, want = np.empty(N, work), np.empty(N, work)
    kp = kernel_view(p)  # float16 as its bits
    kernels.sparse_probs_short_rows(kp, labels, 0.0, lo, hi, renormalize, got, NO_TOTAL, NO_OUTSIDE)
    kernels.sparse_probs(kp, labels, 0.0, lo, hi, renormalize, want)
    _same(got, want, work)
    valid = (labels.astype(np.int64) >= 0) & (labels.astype(np.int64) < c)
    assert (got[labels.astype(np.int64) == kernels.IGNORED] == 0).all()
    assert np.isnan(got[~valid & (labels.astype(np.int64) != kernels.IGNORED)]).all()
    onehot = np.eye(c)[np.where(valid, labels, 0)]
    ref = reference.categorical_crossentropy(
        onehot, p.astype(np.float64), renormalize=renormalize, dtype=work
    )
    plain = valid.copy()
    plain[3] = False  # a subnormal sum: the float32 division is inexact there
    _same(got[plain], ref[plain], work)
    later = np.empty(N - 37, work)  # other block positions, bit for bit
    kernels.sparse_probs_short_rows(
        kp[37:], labels[37:], 0.0, lo, hi, renormalize, later, NO_TOTAL, NO_OUTSIDE
    )
    np.testing.assert_array_equal(later, got[37:])


def test_short_rows_are_exact_for_confident_rows():
    # the maximum's own term is left out of the sum, so a tiny loss keeps its digits
    # (log(1 + s') would round 1 + 1e-9 to 1 in float32 and give 0); what remains is the
    # rounding of u = (z - m) log2(e), |u| ln 2 epsilons relative (~1e-6 at |u| = 43)
    z = np.array([[0.0, -21.0, -25.0], [3.0, 3.0 - 30.0, 3.0 - 35.0]], np.float32)
    got = np.empty(2, np.float32)
    kernels.sparse_logits_short_rows(
        z, np.array([0, 0]), 0.0, np.empty(0), got, np.empty(0, np.float32), NO_TOTAL, NO_OUTSIDE
    )
    want = np.log1p(np.exp(z[:, 1:].astype(np.float64) - z[:, :1]).sum(1))
    np.testing.assert_allclose(got, want, rtol=3e-6)
    dense = np.empty(2, np.float32)
    kernels.dense_logits_short_rows(
        z,
        np.eye(3, dtype=np.float32)[[0, 0]],
        0.0,
        np.empty(0),
        dense,
        np.empty(0, np.float32),
        NO_TOTAL,
    )
    np.testing.assert_allclose(dense, want, rtol=3e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 8.0, 30.0])
def test_sparse_short_rows_relative_to_the_label_and_the_blocks_they_redo(dtype, scale):
    # Without smoothing the sums are taken relative to the label's logit; a row with a
    # logit more than log(ACCEPT) above it (a loss above ~16.6) sends its whole block back
    # to the maxima.  Scale 1: every row is taken; 8: some blocks are redone; 30: most.
    # Every row must match the reference.
    rng = np.random.default_rng(int(scale))
    n, c = 1000, 10
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    labels = rng.integers(0, c, n)
    labels[::97] = kernels.IGNORED
    w = rng.uniform(0.5, 2.0, c)
    z64 = z.astype(np.float64)
    lse_want = np.logaddexp.reduce(z64, axis=1)
    plain_want = np.where(labels >= 0, lse_want - z64[np.arange(n), labels], 0.0)
    assert (plain_want > 17).any() == (scale > 1.0)
    for weights, want in ((np.empty(0), plain_want), (w, plain_want * w[labels])):
        got, lse = np.empty(n, dtype), np.empty(n, dtype)
        kernels.sparse_logits_short_rows(z, labels, 0.0, weights, got, lse, NO_TOTAL, NO_OUTSIDE)
        _same(got, np.where(labels >= 0, want, 0.0), dtype)
        _same(lse, lse_want, dtype)
        alone = np.empty(n, dtype)
        kernels.sparse_logits_short_rows(
            z, labels, 0.0, weights, alone, np.empty(0, dtype), NO_TOTAL, NO_OUTSIDE
        )
        np.testing.assert_array_equal(alone, got)  # asking for the lse moves no loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_short_row_result_depends_on_that_row_alone(dtype):
    # A row the label-relative pass cannot take sends its block back to the maxima; the
    # other rows of that block must keep their own results, bit for bit, as when the row is
    # not there at all (and in any block position).
    rng = np.random.default_rng(11)
    z = (rng.standard_normal((150, 10)) * 3).astype(dtype)
    labels = rng.integers(0, 10, 150)
    z[[5, 70], labels[[5, 70]]] = -60.0  # losses near 60: above ACCEPT
    keep = np.ones(150, bool)
    keep[[5, 70]] = False
    for weights in (np.empty(0), rng.uniform(0.5, 2.0, 10)):
        full, full_lse = np.empty(150, dtype), np.empty(150, dtype)
        kernels.sparse_logits_short_rows(
            z, labels, 0.0, weights, full, full_lse, NO_TOTAL, NO_OUTSIDE
        )
        part, part_lse = np.empty(148, dtype), np.empty(148, dtype)
        kernels.sparse_logits_short_rows(
            z[keep], labels[keep], 0.0, weights, part, part_lse, NO_TOTAL, NO_OUTSIDE
        )
        np.testing.assert_array_equal(full[keep], part)
        np.testing.assert_array_equal(full_lse[keep], part_lse)
        assert (full[~keep] > 50).all()


def test_short_rows_do_not_depend_on_thread_count():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((20_000, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 20_000)
    t = np.eye(10, dtype=np.float32)[labels]

    def compute():
        a, b = np.empty(20_000, np.float32), np.empty(20_000, np.float32)
        kernels.sparse_logits_short_rows(
            z, labels, 0.1, np.empty(0), a, np.empty(0, np.float32), NO_TOTAL, NO_OUTSIDE
        )
        kernels.dense_logits_short_rows(
            z, t, 0.1, np.empty(0), b, np.empty(0, np.float32), NO_TOTAL
        )
        return a, b

    results = per_thread_count(compute)
    for a, b in results[1:]:
        np.testing.assert_array_equal(a, results[0][0])
        np.testing.assert_array_equal(b, results[0][1])


@contextlib.contextmanager
def _array_before_a_guard_page(shape, dtype):
    """A C-contiguous array whose last byte is the last byte before a page the process
    cannot read: any read past its end is a segmentation fault, not garbage."""
    page = mmap.PAGESIZE
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = -(-nbytes // page) + 1
    region = mmap.mmap(-1, pages * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    guard = base + (pages - 1) * page
    assert libc.mprotect(guard, page, 0) == 0  # PROT_NONE
    try:
        offset = (pages - 1) * page - nbytes
        yield np.frombuffer(region, dtype, int(np.prod(shape)), offset).reshape(shape)
    finally:
        assert libc.mprotect(guard, page, mmap.PROT_READ | mmap.PROT_WRITE) == 0


GUARDED = [(np.float32, c) for c in (5, 10, 16, 17, 48)] + [(np.float64, c) for c in (8, 24)]


@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux")
@pytest.mark.parametrize("dtype, c", GUARDED)
def test_tiled_turn_reads_nothing_past_the_array(dtype, c):
    # C-contiguous float rows are turned by whole-row vectors that reach past a row's end;
    # the last tiles of the array must fall back to the column turn.  Row counts around
    # multiples of the tile and block sizes put every kind of tail at the array's end.
    rng = np.random.default_rng(c)
    for n in (1, 15, 16, 17, 63, 64, 65, 80, 130):
        values = rng.standard_normal((n, c)) * 3
        labels = rng.integers(0, c, n)
        want = np.logaddexp.reduce(values, axis=1) - values[np.arange(n), labels]
        with (
            _array_before_a_guard_page((n, c), dtype) as z,
            _array_before_a_guard_page((n, c), dtype) as targets,
        ):
            z[:] = values
            targets[:] = np.eye(c)[labels]
            sparse, dense = np.empty(n, dtype), np.empty(n, dtype)
            kernels.sparse_logits_short_rows(
                z, labels, 0.0, np.empty(0), sparse, np.empty(0, dtype), NO_TOTAL, NO_OUTSIDE
            )
            kernels.dense_logits_short_rows(
                z, targets, 0.0, np.empty(0), dense, np.empty(0, dtype), NO_TOTAL
            )
            del z, targets
        _same(sparse, want, dtype)
        _same(dense, want, dtype)


@njit
def _turned_stats(x, r0, nr):
    # the turn of one block with each statistic, as the dense kernel asks for them
    c = x.shape[1]
    like = np.zeros(1, x.dtype)[0]
    out = np.empty((turned_rows(c), SHORT_BLOCK), x.dtype)
    raw = np.empty((c, SHORT_BLOCK), np.uint16)
    top, total = np.empty(SHORT_BLOCK, x.dtype), np.empty(SHORT_BLOCK, x.dtype)
    _turn_block(x, r0, nr, like, out, raw, top, ROW_MAX)
    _turn_block(x, r0, nr, like, out, raw, total, ROW_SUM)
    return out[:c, :nr].copy(), top[:nr].copy(), total[:nr].copy()


TILED = [(np.float32, c) for c in (7, 10, 16, 17, 40)] + [(np.float64, c) for c in (8, 10, 24)]


@pytest.mark.parametrize("dtype, c", TILED)
def test_turn_statistics_from_tiles_are_the_column_turns(dtype, c):
    # The dense kernel takes row maxima and target sums from the tiles' registers; they must
    # be bit for bit those of the column turn (the rows at an array's end, other layouts),
    # which sums in column order and keeps the first NaN: a row's result may not depend on
    # its position.
    rng = np.random.default_rng(c)
    x = (rng.standard_normal((200, c)) * 5).astype(dtype)
    x[3, 0] = np.nan  # first: the maximum is NaN
    x[4, c - 1] = np.nan  # later: skipped by the maximum
    x[5, :] = -np.inf
    x[6, 1] = np.inf
    x[7, :] = 2.5  # ties
    x[8, :] = rng.uniform(0, 1e-7, c)  # sums whose order shows in the last bits
    x[8, 0] = 1.0
    for r0 in (0, 64, 136 - 64):
        tiled = _turned_stats(x, r0, 64)  # tiles: reads stay inside x
        column = _turned_stats(np.asfortranarray(x), r0, 64)  # the column turn
        block = x[r0 : r0 + 64]
        np.testing.assert_array_equal(tiled[0], block.T)
        for got in (tiled, column):
            want_max, want_sum = block[:, 0].copy(), block[:, 0].copy()
            for j in range(1, c):
                want_max = np.where(block[:, j] > want_max, block[:, j], want_max)
                want_sum = want_sum + block[:, j]
            np.testing.assert_array_equal(got[1], want_max)
            np.testing.assert_array_equal(got[2], want_sum)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="mprotect through ctypes: Linux")
def test_tiles_of_256_bit_vectors(tmp_path):
    # Without AVX-512 a tile is one 256-bit vector (8 float32, 4 float64; 16 x 16 float32
    # tiles in 256-bit registers spilled to the stack).  A Haswell target in a fresh process
    # stands in for such a CPU and runs the two tile tests above: the turn and its row
    # statistics bit for bit the column turn's, and no read past the array's end.
    from pathlib import Path

    from helpers import stand_in_env
    from subproc import run_python

    code = f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from numba import types
        from xent.kernels._bits import tile_width
        import test_short_rows as t
        print(tile_width(types.float32), tile_width(types.float64))
        for dtype, c in t.TILED:
            t.test_turn_statistics_from_tiles_are_the_column_turns(dtype, c)
        for dtype, c in t.GUARDED:
            t.test_tiled_turn_reads_nothing_past_the_array(dtype, c)
    """
    proc = run_python(code, env=stand_in_env("haswell", tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["8", "4"]
