"""Our vectorisable exp/log against libm: accuracy in ulp and the special values."""

import numpy as np
import pytest
from numba import njit

from xent.kernels._math import exp_f32, exp_f64, log_f32, log_f64


def _vectorised(fn):
    @njit(fastmath={"reassoc", "contract", "nsz"}, error_model="numpy")
    def apply(x, out):
        for i in range(x.size):
            out[i] = fn(x[i])

    def call(x):
        out = np.empty_like(x)
        apply(x, out)
        return out

    return call


def ulp_error(got, x, ref_fn, dtype):
    """Error in units of the last place of the correctly rounded float of ``dtype``."""
    ref = ref_fn(x.astype(np.float64))  # float64 libm: far below a float32 ulp
    with np.errstate(all="ignore"):
        r = ref.astype(dtype)
        ok = np.isfinite(r) & (np.abs(r) >= np.finfo(dtype).tiny)
        spacing = np.spacing(np.abs(r)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - ref) / spacing
    return np.where(ok, err, 0.0).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_accuracy(dtype):
    rng = np.random.default_rng(0)
    big = 87.0 if dtype == np.float32 else 708.0
    x = np.concatenate(
        [
            rng.uniform(-big, big, 200_000),
            rng.uniform(-1, 1, 100_000),
            -np.abs(rng.standard_normal(100_000)) * 10,
        ]
    ).astype(dtype)
    fn = _vectorised(exp_f32 if dtype == np.float32 else exp_f64)
    limit = 2.0 if dtype == np.float32 else 4.0  # float64 compared against float64 libm
    assert ulp_error(fn(x), x, np.exp, dtype) <= limit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_accuracy(dtype):
    rng = np.random.default_rng(1)
    tiny_exp = -44 if dtype == np.float32 else -320
    x = np.concatenate(
        [
            rng.uniform(0, 2, 200_000),
            10.0 ** rng.uniform(tiny_exp, 37, 200_000),
            rng.uniform(1e-7, 1.0, 100_000),
        ]
    ).astype(dtype)
    x = x[x > 0]
    fn = _vectorised(log_f32 if dtype == np.float32 else log_f64)
    limit = 2.0 if dtype == np.float32 else 4.0
    assert ulp_error(fn(x), x, np.log, dtype) <= limit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    fn = _vectorised(exp_f32 if dtype == np.float32 else exp_f64)
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e4, -1e4], dtype=dtype)
    got = fn(x)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:], np.array([np.inf, 0.0, 1.0, 1.0, np.inf, 0.0], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_special_values(dtype):
    fn = _vectorised(log_f32 if dtype == np.float32 else log_f64)
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([np.nan, np.inf, -1.0, 0.0, 1.0, tiny], dtype=dtype)
    got = fn(x)
    assert np.isnan(got[0]) and np.isnan(got[2])
    assert got[1] == np.inf and got[3] == -np.inf and got[4] == 0.0
    np.testing.assert_allclose(got[5], np.log(np.float64(tiny)), rtol=1e-6)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-7), (np.float64, 4e-16)])
def test_tanh_absolute_error_and_special_values(dtype, tol):
    from xent.kernels._math import tanh_f32, tanh_f64

    fn = _vectorised(tanh_f32 if dtype == np.float32 else tanh_f64)
    x = np.concatenate([np.linspace(-30, 30, 200_001), np.geomspace(1e-30, 1e3, 10_000)])
    x = np.concatenate([x, -x]).astype(dtype)
    got = fn(x).astype(np.float64)
    assert np.max(np.abs(got - np.tanh(x.astype(np.float64)))) <= tol
    special = np.array([np.inf, -np.inf, np.nan, 0.0, 1e30, -1e30], dtype)
    np.testing.assert_array_equal(fn(special), np.array([1, -1, np.nan, 0, 1, -1], dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_accuracy(dtype):
    # the short-row kernels take log1p of sums in [0, C): tiny sums are the hard case,
    # where log(1 + x) would lose every digit; inlined into a reassociating loop here, as
    # in the kernels (the helper's own flags must keep (1 + x) - 1 from folding to x)
    from xent.kernels._math import log1p_f32, log1p_f64

    rng = np.random.default_rng(2)
    tiny_exp = -40 if dtype == np.float32 else -300
    x = np.concatenate(
        [
            10.0 ** rng.uniform(tiny_exp, 0, 200_000),
            rng.uniform(0, 64, 100_000),
            -rng.uniform(0, 0.999, 100_000),
            10.0 ** rng.uniform(0, 37, 10_000),
        ]
    )
    x = x.astype(dtype)
    fn = _vectorised(log1p_f32 if dtype == np.float32 else log1p_f64)
    limit = 3.0 if dtype == np.float32 else 4.0
    assert ulp_error(fn(x), x, np.log1p, dtype) <= limit


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_special_values(dtype):
    from xent.kernels._math import log1p_f32, log1p_f64

    fn = _vectorised(log1p_f32 if dtype == np.float32 else log1p_f64)
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.array([np.nan, np.inf, -1.0, -2.0, 0.0, tiny], dtype=dtype)
    got = fn(x)
    assert np.isnan(got[0]) and np.isnan(got[3])
    assert got[1] == np.inf and got[2] == -np.inf and got[4] == 0.0 and got[5] == tiny


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp2_accuracy_and_clamps(dtype):
    # the one-pass sums' 2**u: accurate on its working range, an exact 0 far below (so a
    # row with one finite logit has a loss of exactly 0), clamped at 2**64 above
    from xent.kernels._math import exp2_f32, exp2_f64

    fn = _vectorised(exp2_f32 if dtype == np.float32 else exp2_f64)
    lo = -126.0 if dtype == np.float32 else -1022.0
    rng = np.random.default_rng(3)
    u = np.concatenate([rng.uniform(lo, 64, 200_000), rng.uniform(-2, 2, 100_000)]).astype(dtype)
    limit = 2.0 if dtype == np.float32 else 4.0
    assert ulp_error(fn(u), u, np.exp2, dtype) <= limit
    below = np.array([lo - 1, lo - 1.5, -1e4, -np.inf], dtype)
    np.testing.assert_array_equal(fn(below), np.zeros(4, dtype))
    edge = fn(np.linspace(lo - 1, lo, 101).astype(dtype))
    assert np.all((edge >= 0) & (edge <= np.finfo(dtype).tiny))
    got = fn(np.array([np.nan, 64.0, 100.0, np.inf], dtype))
    assert np.isnan(got[0]) and np.all(got[1:] == dtype(2.0**64))


# ---------------------------------------------- the explicit sums of 2**u (AVX-512, AVX2)
def _simd_sums():
    from numba import njit

    from xent.kernels._simd import dense_sums_intrinsic, sum_exp2, sum_exp2_intrinsic

    streamed = sum_exp2_intrinsic(256)
    dense_sums = dense_sums_intrinsic(256)

    @njit
    def each(x, shift, out):  # one-element rows: 2**u of every element on its own
        for j in range(x.shape[0]):
            out[j] = sum_exp2(x[j : j + 1], shift)

    @njit
    def whole(x, t, shift):
        return sum_exp2(x, shift), streamed(x, shift), dense_sums(x, t, shift)

    return each, whole


def _needs(feature: str, reason: str):
    """Skip where the CPU lacks what ``xent.kernels._simd.<feature>()`` tests for."""
    simd = __import__("xent.kernels._simd", fromlist=[feature])
    return pytest.mark.skipif(not getattr(simd, feature)(), reason=reason)


needs_vector_exp = _needs(
    "has_vector_exp", "the explicit loops need AVX-512 or AVX2 with FMA (else: scalar loops)"
)
needs_avx512 = _needs(
    "has_avx512", "float64 rows take the explicit loops with AVX-512 only (AVX2: the scalar loops)"
)


@needs_vector_exp
def test_simd_exp2_accuracy_and_edges():
    each, _ = _simd_sums()
    rng = np.random.default_rng(4)
    log2e = np.float32(1.4426950408889634)
    x = np.concatenate(
        [rng.uniform(-87, 44, 300_000), rng.uniform(-2, 2, 100_000), np.linspace(-87, 44, 100_001)]
    ).astype(np.float32)
    got = np.empty(x.size)
    each(x, np.float32(0.0), got)
    u = x * log2e  # float32 product: the exponent the loop itself forms
    assert ulp_error(got.astype(np.float32), u, np.exp2, np.float32) <= 2.0
    from xent.kernels._simd import vector_lanes

    if vector_lanes() == 8:  # AVX2: each term is the scalar code's 2**u, bit for bit
        from numba import njit

        from xent.kernels._math import exp2_f32

        scalar = njit(lambda u: [exp2_f32(v) for v in u])
        np.testing.assert_array_equal(got.astype(np.float32), np.array(scalar(u), np.float32))
    _check_simd_exp2_edges(each, np.float32, below=-150, low=(-127, -126))


def _check_simd_exp2_edges(each, dtype, below, low):
    """The explicit loop's ``2**u`` (one-element rows, ``u = x log2 e``) at its edges: exact
    zeros from ``u = below`` down, NaN kept, at least ``2**64`` from ``u = 64`` up (a guessed
    shift far below is rejected), between the ``low`` bounds at most the smallest normal."""
    log2e = dtype(1.4426950408889634)
    edge = np.array([-np.inf, below / log2e, -1e4, np.nan, 64 / log2e, 100.0, np.inf], dtype)
    got = np.empty(edge.size)
    each(edge, dtype(0.0), got)
    assert got[0] == 0.0 and got[1] == 0.0 and got[2] == 0.0
    assert np.isnan(got[3])
    assert np.all(got[4:] >= 2.0**63.9)
    between = (np.linspace(*low, 77) / log2e).astype(dtype)
    got = np.empty(between.size)
    each(between, dtype(0.0), got)
    assert np.all((got >= 0) & (got <= np.finfo(dtype).tiny))


@needs_avx512
def test_simd_exp2_float64_is_the_scalar_code_and_keeps_the_edges():
    # float64 rows: each term is _math.exp2_f64's, bit for bit, over the range the one-pass
    # sums use (with AVX-512 the rounding and scaling are vreducepd / vscalefpd instead)
    from xent.kernels._math import exp2_f64

    each, _ = _simd_sums()
    rng = np.random.default_rng(5)
    log2e = 1.4426950408889634
    x = np.concatenate(
        [rng.uniform(-700, 44, 300_000), rng.uniform(-2, 2, 100_000), np.arange(-700.0, 45.0)]
    )
    x = np.concatenate([x, np.arange(-1000, 65) / log2e, (np.arange(-2000, 129) + 0.5) / log2e])
    got = np.empty(x.size)
    each(x, 0.0, got)

    @njit
    def scalar(u, out):
        for i in range(u.size):
            out[i] = exp2_f64(u[i])

    u = x * log2e  # the float64 product: the exponent the loop itself forms
    want = np.empty(x.size)
    scalar(u, want)
    inside = (u >= -1022.0) & (u <= 64.0)  # the scalar code's range (it clamps outside)
    # at an exact tie u = k + 1/2 the scalar code's magic constant (bias 1023 included)
    # rounds to odd k, vreducepd to even k: both terms are accurate (checked below)
    inside &= u - np.floor(u) != 0.5
    assert inside.sum() > 400_000 and (u - np.floor(u) == 0.5).sum() > 1000
    np.testing.assert_array_equal(got[inside], want[inside])
    assert ulp_error(got, u, np.exp2, np.float64) <= 4.0  # normal results, inside or not
    _check_simd_exp2_edges(each, np.float64, below=-1100, low=(-1060, -1022))


@needs_vector_exp
@pytest.mark.parametrize("dtype", [np.float32, pytest.param(np.float64, marks=needs_avx512)])
@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 9, 15, 16, 17, 31, 255, 256, 257, 1000, 4099])
def test_simd_sum_reads_only_the_row(n, dtype):
    # the last partial vector is a masked load: NaN just past the row must not enter the sum
    _, whole = _simd_sums()
    rng = np.random.default_rng(n)
    buf = np.full(n + 48, np.nan, dtype)
    buf[:n] = rng.standard_normal(n) * 3
    tbuf = np.full(n + 48, np.nan, dtype)
    tbuf[:n] = rng.random(n) * (rng.random(n) < 0.7)  # some zero targets
    buf[: n // 7] = -np.inf  # -inf logits where the target is 0 add nothing to sum t d
    tbuf[: n // 7] = 0.0
    shift = dtype(buf[n // 7] if n else 0.0)
    plain, streamed, (s, t_sum, tz) = whole(buf[:n], tbuf[:n], shift)
    u = (buf[:n] - shift) * dtype(1.4426950408889634)  # in the row's type, as the loop forms it
    terms = np.exp2(u.astype(np.float64))
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(plain, terms.sum(), rtol=rtol, atol=0)
    assert plain == streamed == s  # every loop adds in the same order
    t64 = tbuf[:n].astype(np.float64)
    d64 = (buf[:n] - shift).astype(np.float64)
    np.testing.assert_allclose(t_sum, t64.sum(), rtol=rtol, atol=1e-12)
    ref_tz = np.where(t64 != 0, t64 * np.where(t64 != 0, d64, 0.0), 0.0).sum()
    np.testing.assert_allclose(tz, ref_tz, rtol=10 * rtol, atol=10 * rtol)


@needs_vector_exp
def test_turned_float64_sums_equal_the_scalar_loops_bit_for_bit():
    # float64 turned blocks take the explicit loop's exp2_f64 in vectors of doubles: each term
    # is the scalar code's (within its range), added in the same class order, so every sum is
    # the same double
    from numba import njit

    from xent.kernels._simd import turned_dense_sums, turned_sum_exp2, turned_sum_exp2_ties
    from xent.kernels.short_rows import (
        _turned_dense_sums_scalar,
        _turned_sum_exp_all_scalar,
        _turned_sum_exp_scalar,
    )

    @njit
    def both(bz, bt, c, m):
        n = bz.shape[1]
        out = [np.empty(n) for _ in range(12)]
        turned_sum_exp2(bz, c, m, out[0])
        _turned_sum_exp_all_scalar(bz, c, n, m, out[1])
        turned_dense_sums(bz, bt, c, m, out[2], out[3], out[4])
        _turned_dense_sums_scalar(bz, bt, c, n, m, out[5], out[6], out[7], out[7], False)
        turned_sum_exp2_ties(bz, c, m, out[8], out[9])  # the options' sums below the maximum
        _turned_sum_exp_scalar(bz, c, n, m, out[10], out[11])
        return out

    rng = np.random.default_rng(8)
    c, n = 13, 64
    bz = rng.standard_normal((c, n)) * 30
    bz[0, :8] = [-np.inf, np.nan, 1e300, -1e300, 0.0, 700.0, -745.0, 40.0]
    bt = rng.random((c, n)) * (rng.random((c, n)) < 0.5)
    m = bz.max(0)
    m[:8] = bz[0, :8]  # ties (d == 0), NaN, infinite and far-off shifts
    got = both(bz, bt, c, m)
    # a shift far below a logit: the scalar code clamps each term at 2**64, vscalefpd (AVX-512)
    # gives the term itself; either way the sum is at least 2**64 and the guess is rejected
    far = got[1] >= 2.0**64
    assert far[3] and far[4] and far[6] and far.sum() == 3  # shifts -1e300, 0 and -745
    assert (got[0][far] >= 2.0**64).all() and (got[2][far] >= 2.0**64).all()
    np.testing.assert_array_equal(got[0][~far], got[1][~far])
    np.testing.assert_array_equal(got[2][~far], got[5][~far])
    np.testing.assert_array_equal(got[3], got[6])
    # the target sums hold no exp: whether LLVM fuses t d into the running sum of the scalar
    # loop is its choice per CPU (AVX-512 makes it a masked FMA; AVX2 does not), the vector
    # loop never fuses it; every term has the sign of d <= 0, so the two differ by at most
    # one rounding per term
    np.testing.assert_allclose(got[4], got[7], rtol=c * 2.0**-52, atol=0)
    np.testing.assert_array_equal(got[8][~far], got[10][~far])
    assert (got[8][far] >= 2.0**64).all() and (got[10][far] >= 2.0**64).all()
    np.testing.assert_array_equal(got[9], got[11])
    assert np.isfinite(got[0][8:]).all() and (got[9][8:] >= 1).all()  # the maxima counted


@needs_vector_exp
def test_simd_log1p_accuracy_and_edges():
    # the short-row kernels' last step, log1p(s + ties - 1) over a block buffer: the same
    # 3-ulp budget as the scalar log1p, on the sums it sees (s >= 0, ties >= 1)
    from numba import njit

    from xent.kernels._simd import log1p_rows_f32

    @njit
    def apply(s, ties, out):
        log1p_rows_f32(s, ties, out)

    rng = np.random.default_rng(6)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-40, 0, 200_000),
            rng.uniform(0, 64, 100_000),
            10.0 ** rng.uniform(0, 37, 10_000),
            [0.0, 1e-45, 0.5, 1.0, 2.0, 3.0],
        ]
    ).astype(np.float32)
    x = np.concatenate([x, np.zeros(-x.size % 16, np.float32)])
    out = np.empty_like(x)
    apply(x, np.ones_like(x), out)
    assert ulp_error(out, x, np.log1p, np.float32) <= 3.0
    assert out[x == 0].max() == 0.0 and out[x == np.float32(1e-45)][0] == np.float32(1e-45)
    ties = rng.integers(1, 4, x.size).astype(np.float32)  # tied maxima add whole ones
    apply(x, ties, out)
    arg = x + (ties - 1)
    assert ulp_error(out, arg, np.log1p, np.float32) <= 3.0
    _same_as_scalar_on_avx2(out, arg, "log1p_f32")
    edge = np.array([np.inf, np.nan, 3e38] + [0.0] * 13, np.float32)
    apply(edge, np.ones(16, np.float32), out[:16])
    assert out[0] == np.inf and np.isnan(out[1]) and abs(out[2] - np.log1p(3e38)) < 1e-5


@needs_vector_exp
def test_simd_log_accuracy_and_edges():
    # the short-row probability kernel's logs over a block buffer (in place): log_f32's 2-ulp
    # budget over the whole float32 range, subnormals included, and its edge values
    from numba import njit

    from xent.kernels._simd import log_rows_f32

    @njit
    def apply(x):
        log_rows_f32(x, x)

    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            rng.uniform(0, 2, 200_000),
            10.0 ** rng.uniform(-44, 38, 200_000),
            rng.uniform(1e-7, 1.0, 100_000),
            [1e-45, 1.1754942e-38, 0.75, 0.7071, 1.0, 1.5, 2.0, 3.4e38],
        ]
    ).astype(np.float32)
    x = np.concatenate([x[x > 0], np.ones(-x[x > 0].size % 16, np.float32)])
    out = x.copy()
    apply(out)
    assert ulp_error(out, x, np.log, np.float32) <= 2.0
    assert out[x == 1.0].max() == 0.0 == out[x == 1.0].min()
    edge = np.array([np.nan, np.inf, -1.0, -0.0, 0.0, -np.inf] + [1.0] * 10, np.float32)
    apply(edge)
    assert np.isnan(edge[0]) and edge[1] == np.inf and np.isnan(edge[2])
    assert edge[3] == -np.inf and edge[4] == -np.inf and np.isnan(edge[5])
    _same_as_scalar_on_avx2(out, x, "log_f32")


def _same_as_scalar_on_avx2(got, x, name):
    """In 8 lanes (AVX2) the vector logs are the scalar functions' operations in their order:
    every value equal to ``_math``'s, bit for bit."""
    from numba import njit

    from xent.kernels import _math
    from xent.kernels._simd import vector_lanes

    if vector_lanes() != 8:
        return
    scalar = getattr(_math, name)

    @njit(fastmath={"contract"})
    def each(x, out):
        for g in range(x.shape[0]):
            out[g] = scalar(x[g])

    want = np.empty_like(x)
    each(x, want)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))


@pytest.mark.parametrize(
    "cpu, lanes",
    [("haswell", 8), ("sandybridge", 0)],
    ids=["avx2", "no-avx2"],
)
def test_cpus_without_avx512(tmp_path, cpu, lanes):
    # Without AVX-512 the 16-lane loops must never be compiled (LLVM could not select their
    # instructions): a CPU with AVX2 and FMA takes the 8-lane loops, one without them the
    # scalar loops, with the same losses.  A Haswell and a Sandy Bridge target in a fresh
    # process and cache stand in for such CPUs; long rows and short rows, sparse and dense.
    import json

    from helpers import stand_in_env
    from reference import categorical_crossentropy, sparse_categorical_crossentropy
    from subproc import run_python

    code = """
        import json, numpy as np, xent
        from xent import kernels
        from xent.kernels._simd import vector_lanes
        rng = np.random.default_rng(5)
        out = {"avx512": kernels.has_avx512(), "lanes": vector_lanes()}
        for n, c, dtype in ((200, 1000, "float32"), (300, 10, "float32"),
                            (200, 1000, "float64"), (300, 10, "float64")):
            z = (rng.standard_normal((n, c)) * 3).astype(dtype)
            y = rng.integers(0, c, n)
            t = rng.random((n, c)).astype(dtype)
            t /= t.sum(1, keepdims=True)
            out[f"{c}-{dtype}"] = [z.tolist(), y.tolist(), t.tolist(),
                xent.sparse_categorical_crossentropy(y, z, from_logits=True).tolist(),
                xent.categorical_crossentropy(t, z, from_logits=True).tolist(),
                xent.categorical_crossentropy(t, t[::-1], label_smoothing=0.1).tolist(),
                xent.sparse_categorical_crossentropy(y, t).tolist()]
        print(json.dumps(out))
    """
    proc = run_python(code, env=stand_in_env(cpu, tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    assert got["avx512"] is False and got["lanes"] == lanes
    # float64 too: its row loops run in 4 double lanes with AVX2 (the scalar code's 2**u)
    for key in ("1000-float32", "10-float32", "1000-float64", "10-float64"):
        z, y, t, sparse, dense, probs, sparse_probs = (np.asarray(v) for v in got[key])
        dtype = np.dtype(key.split("-")[1])
        tol = dict(rtol=2e-6, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-13)
        z = z.astype(dtype)
        ref_sparse, _ = sparse_categorical_crossentropy(y, z, from_logits=True)
        ref_dense = categorical_crossentropy(t.astype(dtype), z, from_logits=True)
        np.testing.assert_allclose(sparse, ref_sparse, **tol)
        np.testing.assert_allclose(dense, ref_dense, **tol)
        t = t.astype(dtype)  # probabilities too (short rows: the turned-block kernel)
        ref_probs = categorical_crossentropy(t, t[::-1], label_smoothing=0.1, dtype=dtype)
        np.testing.assert_allclose(probs, ref_probs, **tol)
        ref_sparse_probs = categorical_crossentropy(np.eye(t.shape[1])[y], t, dtype=dtype)
        np.testing.assert_allclose(sparse_probs, ref_sparse_probs, **tol)
