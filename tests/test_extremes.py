"""Edge values: -inf and huge logits, zero and one probabilities, NaN rows."""

import warnings

import numpy as np
import pytest

import xent

import reference
from helpers import per_thread_count, tolerances

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_logits_are_stable(dtype):
    z = np.array([[1e30, -1e30, 0.0], [-1e30, 1e30, 1e30]], dtype)
    got = xent.sparse_categorical_crossentropy([0, 1], z, from_logits=True)
    np.testing.assert_allclose(got, [0.0, np.log(2.0)], rtol=1e-6, atol=0)
    dense = xent.categorical_crossentropy([[1, 0, 0], [0, 1, 0]], z, from_logits=True)
    np.testing.assert_allclose(dense, got, rtol=1e-6)


@pytest.mark.parametrize("smoothing_sparse", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_logit_with_zero_weight_contributes_zero(dtype, smoothing_sparse):
    z = np.array([[-np.inf, 1.0, 2.0], [0.0, -np.inf, -np.inf]], dtype)
    want = [np.log1p(np.exp(-1.0)), 0.0]
    np.testing.assert_allclose(
        xent.sparse_categorical_crossentropy([2, 0], z, from_logits=True),
        want,
        rtol=1e-6,
        atol=1e-7,
    )
    dense = xent.categorical_crossentropy([[0, 0, 1], [1, 0, 0]], z, from_logits=True)
    np.testing.assert_allclose(dense, want, rtol=1e-6, atol=1e-7)
    # with smoothing every class has weight > 0: the loss is +inf, not NaN
    if smoothing_sparse:
        got = xent.sparse_categorical_crossentropy([2, 0], z, True, label_smoothing=0.1)
    else:
        got = xent.categorical_crossentropy([[0, 0, 1], [1, 0, 0]], z, True, label_smoothing=0.1)
    assert np.all(got == np.inf)


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_on_true_class_is_plus_inf(dtype):
    z = np.array([[-np.inf, 1.0]], dtype)
    assert xent.sparse_categorical_crossentropy([0], z, from_logits=True)[0] == np.inf
    assert xent.categorical_crossentropy([[1, 0]], z, from_logits=True)[0] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_minus_inf_row_and_nan_rows_are_nan_for_that_row_only(dtype):
    z = np.array(
        [[-np.inf, -np.inf], [np.nan, 1.0], [1.0, np.nan], [np.inf, 1.0], [1.0, 2.0]], dtype
    )
    y = [0, 1, 0, 1, 1]
    for got in (
        xent.sparse_categorical_crossentropy(y, z, from_logits=True),
        xent.categorical_crossentropy(np.eye(2)[y], z, from_logits=True),
    ):
        assert np.all(np.isnan(got[:4]))
        np.testing.assert_allclose(got[4], np.log1p(np.exp(-1.0)), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probabilities_zero_one_and_zero_rows(dtype):
    p = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]], dtype)
    eps = dtype(1e-7)
    got = xent.sparse_categorical_crossentropy([0, 0, 1], p)
    np.testing.assert_allclose(
        got[:2], [-np.log(np.float64(eps)), -np.log(np.float64(1 - eps))], rtol=1e-6
    )
    assert np.isnan(got[2])  # 0 / 0 when renormalising, as Keras
    dense = xent.categorical_crossentropy([[1, 0], [1, 0], [0, 1]], p)
    np.testing.assert_allclose(dense[:2], got[:2], rtol=1e-6)
    assert np.isnan(dense[2])
    # without renormalisation a zero row is just clipped
    np.testing.assert_allclose(
        xent.sparse_categorical_crossentropy([1], p[2:], renormalize=False),
        [-np.log(np.float64(eps))],
        rtol=1e-6,
    )


@pytest.mark.parametrize("gap", [0.0, 5.0, 15.0, 40.0, 300.0, 1e6])
@pytest.mark.parametrize("dtype", DTYPES)
def test_guessed_shift_far_below_the_maximum(rng, dtype, gap):
    """The one-pass shift is taken from the first elements and the label's logit; rows whose
    maximum lies `gap` above them exercise the accepted path (small gaps) and the exact
    fallback (large gaps, including a sum that would overflow)."""
    import reference

    n, c = 40, 300
    z = rng.standard_normal((n, c))
    z[:, 20:] += gap  # first 16 elements and (for labels < 16) the label sit `gap` below
    y = rng.integers(0, 16, n)
    z = z.astype(dtype)
    t = rng.random((n, c))
    rtol, atol = tolerances(dtype)
    atol = atol * max(1.0, gap / 10) if dtype == np.float32 else atol * max(1.0, gap)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    want, _ = reference.sparse_categorical_crossentropy(y, z, True)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    got = xent.categorical_crossentropy(t, z, from_logits=True)
    want = reference.categorical_crossentropy(t, z, True)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("gap", [10.0, 40.0, 300.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_guess_is_the_first_element_or_the_label(rng, dtype, gap):
    """The sparse shift is the first element or the label's logit: a maximum `gap` above both,
    among the first 16 elements (which a dense row's guess covers), is accepted for a small
    gap and sent to the exact path for a large one; a first element of -inf, +inf or NaN."""
    import reference

    n, c = 48, 300
    z = rng.standard_normal((n, c))
    z[:, 5] += gap
    y = rng.integers(20, c, n)
    z[::4, 0] = -np.inf  # the label's logit is the shift
    z[1::8, 0] = np.nan
    z[2::8, 0] = np.inf
    z = z.astype(dtype)
    rtol, atol = tolerances(dtype)
    atol = atol * max(1.0, gap / 10) if dtype == np.float32 else atol * max(1.0, gap)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    want, _ = reference.sparse_categorical_crossentropy(y, z, True)
    assert np.isnan(got[1::8]).all() and np.isnan(got[2::8]).all()
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_float32_mean_over_1e8_rows_keeps_six_digits():
    n, c = 100_000_000, 2
    rng = np.random.default_rng(5)
    z = rng.standard_normal((n, c), dtype=np.float32)
    y = rng.integers(0, c, n, dtype=np.int8)
    got = xent.SparseCategoricalCrossentropy(from_logits=True)(y, z)
    assert got.dtype == np.float32
    total = 0.0
    for s in range(0, n, 10_000_000):  # float64 reference, chunked to bound memory
        zz = z[s : s + 10_000_000].astype(np.float64)
        yy = y[s : s + 10_000_000]
        lse = np.logaddexp(zz[:, 0], zz[:, 1])
        total += np.sum(lse - zz[np.arange(len(yy)), yy])
    want = total / n
    assert abs(float(got) - want) / want < 1e-6, (float(got), want)


@pytest.mark.parametrize("from_logits", [True, False])
def test_row_blocks_give_the_same_rows(rng, from_logits):
    z = rng.standard_normal((1001, 37)).astype(np.float32)
    if not from_logits:
        z = np.abs(z)
    y = rng.integers(0, 37, 1001)
    t = rng.random((1001, 37)).astype(np.float32)
    whole_s = xent.sparse_categorical_crossentropy(y, z, from_logits, label_smoothing=0.1)
    whole_d = xent.categorical_crossentropy(t, z, from_logits, label_smoothing=0.1)
    for start in range(0, 1001, 97):
        blk = slice(start, start + 97)
        np.testing.assert_array_equal(
            xent.sparse_categorical_crossentropy(y[blk], z[blk], from_logits, label_smoothing=0.1),
            whole_s[blk],
        )
        np.testing.assert_array_equal(
            xent.categorical_crossentropy(t[blk], z[blk], from_logits, label_smoothing=0.1),
            whole_d[blk],
        )


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_rows_without_softmax_are_nan_even_with_zero_targets(dtype):
    # found by the hostile-input search: NaN logit, C = 1, all-zero target row
    z = np.array([[np.nan], [np.inf], [-np.inf]], dtype)
    got = xent.categorical_crossentropy(np.zeros((3, 1), np.uint8), z, from_logits=True)
    assert np.all(np.isnan(got))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("c", [1, 3, 10, 16])
def test_dense_short_row_blocks_and_their_fallback(c, smoothing):
    """The dense short-row block kernel over several blocks, through the public function, with
    rows far from the usual (first logit far below the maximum, -inf first logit) and rows
    that must take the per-row fallback (NaN, +inf, all -inf); compared with the float64
    reference (and lse with it)."""
    rng = np.random.default_rng(c)
    n = 1000  # several row blocks and a partial one
    z = rng.standard_normal((n, c)) * 3
    t = rng.random((n, c))
    special = {
        0: lambda r: r.__setitem__(0, -1e4),
        1: lambda r: r.__setitem__(-1, np.nan),
        2: lambda r: r.__setitem__(-1, np.inf),
        3: lambda r: r.__setitem__(0, -np.inf),
        4: lambda r: r.__setitem__(slice(None), -np.inf),
    }
    for k, f in special.items():
        f(z[100 * k + 7])
    t[307, 0] = 0.0  # -inf first logit with a zero target contributes 0
    for dtype in (np.float32, np.float64):
        zz = z.astype(dtype)
        loss, lse = xent.categorical_crossentropy(
            t, zz, from_logits=True, label_smoothing=smoothing, return_lse=True
        )
        want = reference.categorical_crossentropy(t, zz.astype(np.float64), True, smoothing)
        rtol = 1e-12 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(loss, want, rtol=rtol, atol=rtol, equal_nan=True)
        with np.errstate(all="ignore"):
            m = np.max(zz.astype(np.float64), axis=1, keepdims=True)
            want_lse = (m + np.log(np.exp(zz - m).sum(1, keepdims=True)))[:, 0]
        finite = np.isfinite(want_lse)
        np.testing.assert_allclose(lse[finite], want_lse[finite], rtol=rtol, atol=rtol)
        # a non-contiguous view (strided reads into the turned block): same rows
        wide = np.zeros((n, 2 * c), dtype)
        wide[:, ::2] = zz
        again = xent.categorical_crossentropy(
            t, wide[:, ::2], from_logits=True, label_smoothing=smoothing
        )
        np.testing.assert_allclose(again, loss, rtol=rtol, atol=rtol, equal_nan=True)


def test_few_very_long_rows_are_split_over_threads():
    """Fewer rows than threads and C >= LONG_ROW: each row's sums are split into a fixed
    number of pieces computed on all threads.  Checked against the reference, including a
    row whose first logits lie far below its maximum (the exact path) and NaN / all -inf
    rows, and bit for bit across thread counts (the pieces do not depend on them)."""

    from xent import _engine, kernels

    c = _engine.LONG_ROW + 12_345
    rng = np.random.default_rng(5)
    z = rng.standard_normal((1, c)) * 2
    y = np.array([c - 3])
    for row_fix in (None, "low_start", "nan", "all_minus_inf"):
        zz = z.copy()
        if row_fix == "low_start":
            zz[0, :100] = -1e4
            zz[0, 200_000 % c] = 50.0
        elif row_fix == "nan":
            zz[0, 777] = np.nan
        elif row_fix == "all_minus_inf":
            zz[:] = -np.inf
        t = np.zeros_like(zz)
        t[0, y] = 0.7
        t[0, 5] = 0.3
        for dtype in (np.float32, np.float64):
            zd = zz.astype(dtype)
            rtol = 1e-12 if dtype == np.float64 else 2e-5
            for ls in (0.0, 0.1):
                got = xent.sparse_categorical_crossentropy(
                    y, zd, from_logits=True, label_smoothing=ls
                )
                want, _ = reference.sparse_categorical_crossentropy(
                    y, zd.astype(np.float64), True, label_smoothing=ls
                )
                np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)
                got = xent.categorical_crossentropy(t, zd, from_logits=True, label_smoothing=ls)
                want = reference.categorical_crossentropy(t, zd.astype(np.float64), True, ls)
                np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)

            # the split kernels give the same bits on one thread and on all of them
            def split(zd=zd, t=t, dtype=dtype):
                a, b, lse = np.empty(1, dtype), np.empty(1, dtype), np.empty(1, dtype)
                kernels.sparse_logits_long_rows(zd, y, 0.1, np.empty(0), a, lse)
                kernels.dense_logits_long_rows(zd, t.astype(dtype), 0.1, b, lse)
                return a.tobytes(), b.tobytes(), lse.tobytes()

            outs = per_thread_count(split)
            assert all(o == outs[0] for o in outs[1:])


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_probability_row_with_subnormal_sum(smoothing):
    # renormalising by a subnormal float32 sum: its reciprocal overflows to inf, and
    # 0 * inf would make the row NaN where Keras's division gives 0 (found by hypothesis)
    p = np.array([[0.0, 1e-45], [0.25, 0.75]], np.float32)
    t = np.eye(2, dtype=np.float32)[[0, 0]]
    want = reference.categorical_crossentropy(t, p, label_smoothing=smoothing, dtype=np.float32)
    assert np.all(np.isfinite(want))
    got = xent.categorical_crossentropy(t, p, label_smoothing=smoothing)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    got_sparse = xent.sparse_categorical_crossentropy([0, 0], p, label_smoothing=smoothing)
    np.testing.assert_allclose(got_sparse, want, rtol=1e-5)


def test_a_total_above_float32s_largest_value_is_inf_without_a_warning():
    """Two float32 losses of 3e38 sum to more than float32 holds: the sum is inf (the
    correctly rounded total), the mean is finite, and NumPy's overflow warning stays inside."""
    z = np.array([[0.0, 3e38], [3e38, 0.0]], np.float32)
    y = np.array([0, 1])
    want = reference.sparse_categorical_crossentropy(y, z, True, dtype=np.float32)[0]
    np.testing.assert_allclose(want, [3e38, 3e38], rtol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keras_sum = xent.SparseCategoricalCrossentropy(True, reduction="sum")(y, z)
        keras_mean = xent.SparseCategoricalCrossentropy(True)(y, z)
        torch_sum = xent.cross_entropy(z, y, reduction="sum")
        torch_mean = xent.cross_entropy(z, y)
    assert keras_sum == np.inf and torch_sum == np.inf
    assert keras_sum.dtype == torch_sum.dtype == np.float32
    np.testing.assert_allclose([keras_mean, torch_mean], [3e38, 3e38], rtol=1e-6)
