"""bfloat16 and float16 inputs, read by the kernels as they are (no converted copy).

Every path is compared with the float64 reference computed from the upcast 16-bit values:
sparse and dense, logits and probabilities, short, ordinary and split long rows, every
logits option, the evaluation kernel, memory-mapped streaming and Dask.  The loss is float32.
``ml_dtypes`` (the ``peers`` extra, which CI installs) gives NumPy a bfloat16 dtype.
"""

import tracemalloc
import warnings

import numpy as np
import pytest

import xent

import reference as ref

ml_dtypes = pytest.importorskip("ml_dtypes")

HALVES = [np.float16, ml_dtypes.bfloat16]
RTOL = ATOL = 1e-5  # float32 arithmetic, as for float32 input


def _upcast(x):
    return np.asarray(x).astype(np.float64)


def _close(got, want, name=""):
    assert np.asarray(got).dtype == np.float32, name
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=name)


def _logits(rng, n, c, dtype, scale=4.0):
    return (rng.standard_normal((n, c)) * scale).astype(dtype)


def _probs(rng, n, c, dtype):
    p = rng.random((n, c)) ** 4
    return (p / p.sum(1, keepdims=True)).astype(dtype)


# short rows (turned blocks), ordinary rows, and one row long enough to be split
SHAPES = [(700, 3), (333, 10), (257, 40), (150, 96), (129, 97), (40, 1000), (1, 140_000)]


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{c}" for n, c in SHAPES])
def test_logits_sparse_and_dense(rng, dtype, shape):
    n, c = shape
    z = _logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    t = _probs(rng, n, c, dtype)
    zw, tw = _upcast(z), _upcast(t)
    want_sparse = ref.sparse_categorical_crossentropy(y, zw, from_logits=True)[0]
    _close(xent.sparse_categorical_crossentropy(y, z, from_logits=True), want_sparse, "sparse")
    want_dense = ref.categorical_crossentropy(tw, zw, from_logits=True)
    _close(xent.categorical_crossentropy(t, z, from_logits=True), want_dense, "dense")
    # smoothing and class weights (PyTorch's rules), ignored rows
    w = rng.random(c) + 0.5
    yi = np.where(rng.random(n) < 0.2, -100, y)
    for eps in (0.0, 0.1):
        want = ref.torch_cross_entropy(zw, yi, w, label_smoothing=eps, reduction="none")
        got = xent.cross_entropy(z, yi, weight=w, label_smoothing=eps, reduction="none")
        _close(got, want, f"torch index eps={eps}")
        want = ref.torch_cross_entropy(zw, tw, w, label_smoothing=eps, reduction="none")
        got = xent.cross_entropy(z, t, weight=w, label_smoothing=eps, reduction="none")
        _close(got, want, f"torch probs eps={eps}")


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("c", [10, 300])
def test_large_vocabulary_options(rng, dtype, c):
    """Soft-capping, z-loss, the log-sum-exp output and class masks (optax ``where``)."""
    n, s, cap = 50, 1e-3, 5.0
    z = _logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    zc = cap * np.tanh(_upcast(z) / cap)
    m = zc.max(1, keepdims=True)
    lse = (m + np.log(np.exp(zc - m).sum(1, keepdims=True)))[:, 0]
    kw = dict(z_loss=s, softcap=cap, return_lse=True)
    loss, lse_out = xent.sparse_categorical_crossentropy(y, z, True, **kw)
    want = ref.sparse_categorical_crossentropy(y, zc, from_logits=True)[0] + s * lse**2
    _close(loss, want, "loss")
    _close(lse_out, lse, "lse")
    where = rng.random((n, c)) < 0.8
    where[np.arange(n), y] = True
    got = xent.softmax_cross_entropy_with_integer_labels(z, y, where=where)
    zm = np.where(where, _upcast(z), -np.inf)
    _close(got, ref.optax_integer_labels(zm, y), "class mask")


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("c", [10, 1000])
def test_probabilities(rng, dtype, c):
    """Keras's clipped, renormalised probabilities (bounds in float32, the type computed in),
    scikit-learn's ``log_loss``."""
    n = 300
    p = _probs(rng, n, c, dtype)
    p[0, :] = 0  # a zero row: clipping decides
    y = rng.integers(0, c, n)
    t = _probs(rng, n, c, dtype)
    pw = _upcast(p)
    want = ref.sparse_categorical_crossentropy(y, pw, dtype=np.float32)[0]
    _close(xent.sparse_categorical_crossentropy(y, p), want, "sparse")
    want = ref.sparse_categorical_crossentropy(y, pw, label_smoothing=0.2, dtype=np.float32)[0]
    _close(xent.sparse_categorical_crossentropy(y, p, label_smoothing=0.2), want, "smoothed")
    want = ref.categorical_crossentropy(_upcast(t), pw, dtype=np.float32)
    _close(xent.categorical_crossentropy(t, p), want, "dense")
    q = pw[1:] / pw[1:].sum(1, keepdims=True)
    q16 = q.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 16-bit rows do not sum to 1 exactly
        got = xent.log_loss(y[1:], q16, labels=np.arange(c))
    # clipped at float16's eps for float16 (as scikit-learn), float64's for bfloat16 (which
    # scikit-learn converts to float64); the reference reads the dtype the same way
    want = ref.sklearn_log_loss(y[1:], q16, labels=np.arange(c))
    np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
def test_nll_loss_gathers_16_bit_values(rng, dtype):
    x = _logits(rng, 60, 7, dtype)
    y = rng.integers(0, 7, 60)
    got = xent.nll_loss(x, y, reduction="none")
    _close(got, ref.torch_nll_loss(_upcast(x), y, reduction="none"))


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
def test_extreme_values_widen_exactly(dtype):
    """The largest finite value, subnormals, infinities and NaN keep their meaning."""
    info = ml_dtypes.finfo(dtype)
    big, tiny = float(info.max), float(info.smallest_subnormal)
    z = np.array(
        [
            [big, 0.0, -big],
            [tiny, -tiny, 0.0],
            [-np.inf, 0.0, 1.0],
            [np.inf, 0.0, 1.0],
            [np.nan, 0.0, 1.0],
            [-np.inf, -np.inf, -np.inf],
        ]
    ).astype(dtype)
    y = np.array([0, 1, 1, 1, 1, 0])
    want = ref.sparse_categorical_crossentropy(y, _upcast(z), from_logits=True)[0]
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.isnan(got[3:]).all() and np.isfinite(got[:3]).all()


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
def test_evaluate_in_memory_streamed_and_dask(rng, dtype, tmp_path):
    n, c = 3000, 50
    z = _logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    want = ref.evaluate(y, _upcast(z), from_logits=True, top_k=(1, 5))
    got = xent.evaluate(y, z, from_logits=True, top_k=(1, 5))

    def check(result):
        for key in ("loss", "accuracy", "perplexity"):
            np.testing.assert_allclose(getattr(result, key), want[key], rtol=1e-5, err_msg=key)
        assert result.top_k_accuracy[5] == pytest.approx(want["top_k_accuracy"][5], rel=1e-12)

    check(got)
    path = tmp_path / "z.npy"
    np.save(path, z)
    mapped = np.load(path, mmap_mode="r")
    if dtype is ml_dtypes.bfloat16:
        mapped = mapped.view(ml_dtypes.bfloat16)  # NumPy stores bfloat16 as 2-byte void
    check(xent.evaluate(y, mapped, from_logits=True, top_k=(1, 5), batch_size=257))
    # dense targets of the same 16-bit dtype
    t = np.zeros((n, c), dtype)
    t[np.arange(n), y] = 1
    dense = xent.evaluate(t, z, from_logits=True, top_k=(1, 5))
    assert dense.accuracy == got.accuracy
    np.testing.assert_allclose(dense.loss, got.loss, rtol=1e-6)


@pytest.mark.dask
@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
def test_dask_blocks(rng, dtype):
    da = pytest.importorskip("dask.array")
    n, c = 1000, 30
    z = _logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    dz, dy = da.from_array(z, chunks=(128, c)), da.from_array(y, chunks=128)
    want = ref.sparse_categorical_crossentropy(y, _upcast(z), from_logits=True)[0]
    got = xent.sparse_categorical_crossentropy(dy, dz, from_logits=True).compute()
    _close(got, want)
    mean = xent.cross_entropy(dz, dy).compute()
    np.testing.assert_allclose(mean, want.mean(), rtol=1e-6)
    ev = xent.evaluate(dy, dz, from_logits=True)
    np.testing.assert_allclose(ev.loss, want.mean(), rtol=1e-6)


@pytest.mark.parametrize("dtype", HALVES, ids=["float16", "bfloat16"])
@pytest.mark.parametrize("c", [10, 1000])
def test_no_copy_of_the_input(rng, dtype, c):
    """Peak traced memory stays O(N): per-row outputs, never the input's size."""
    n = 20_000_000 // (2 * c)  # a 20 MB input
    z = _logits(rng, n, c, dtype)
    y = rng.integers(0, c, n)
    t = np.zeros((n, c), dtype)
    t[np.arange(n), y] = 1
    calls = [
        lambda: xent.sparse_categorical_crossentropy(y, z, from_logits=True),
        lambda: xent.categorical_crossentropy(t, z, from_logits=True),
        lambda: xent.cross_entropy(z, y),
        lambda: xent.evaluate(y, z, from_logits=True),
    ]
    for call in calls:
        call()  # compile first
        tracemalloc.start()
        call()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert peak < 64 * n + 2**20, (peak, z.nbytes)


def test_inputs_are_not_modified(rng):
    for dtype in HALVES:
        z = _logits(rng, 100, 20, dtype)
        before = z.copy()
        xent.cross_entropy(z, rng.integers(0, 20, 100), label_smoothing=0.1, softcap=3.0)
        assert z.tobytes() == before.tobytes()


def test_two_byte_void_arrays_get_a_hint():
    """``np.load`` of a saved bfloat16 array gives 2-byte void data: say what to do."""
    v = np.zeros((4, 3), ml_dtypes.bfloat16).view("V2")
    with pytest.raises(TypeError, match=r"y_pred .*void.*ml_dtypes\.bfloat16"):
        xent.sparse_categorical_crossentropy(np.zeros(4, int), v)


@pytest.mark.slow
def test_kernels_cached_by_one_process_are_right_in_another(tmp_path):
    """16-bit kernels compiled and cached by one process give the right numbers in another.

    The sequence that exposed it, run as it was found: the command-line test (its ``xent
    eval`` processes compile and cache 16-bit evaluation kernels) and then the 16-bit
    evaluation test in one pytest process, both on a fresh kernel cache.  With record dtypes
    for the 16-bit formats (an earlier design) the second loaded kernels that linked to the
    other format's helpers: a float16 loss of 815,631 instead of 9.6.
    """
    import sys
    from pathlib import Path

    from subproc import run_isolated

    root = Path(__file__).resolve().parents[1]
    run = run_isolated(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_evaluate.py::test_cli_reads_safetensors_and_bfloat16_npy",
            "tests/test_half.py::test_evaluate_in_memory_streamed_and_dask",
        ],
        env={"NUMBA_CACHE_DIR": str(tmp_path / "cache")},
        cwd=root,
        timeout=900,
    )
    assert run.returncode == 0 and "3 passed" in run.stdout, run.stdout[-3000:]


def test_int16_targets_are_not_taken_for_16_bit_floats(rng):
    """The kernels read int16/uint16 arrays as bfloat16/float16 bits: integer targets of those
    dtypes are converted by the engine and give the loss of the same targets as int64."""
    z = _logits(rng, 50, 7, np.float32)
    t = np.eye(7, dtype=np.int64)[rng.integers(0, 7, 50)] * 2
    want = xent.categorical_crossentropy(t, z, from_logits=True)
    for dtype in (np.int16, np.uint16):
        got = xent.categorical_crossentropy(t.astype(dtype), z, from_logits=True)
        np.testing.assert_array_equal(got, want)
        got = xent.categorical_crossentropy(t.astype(dtype), z.astype(np.float16), True)
        np.testing.assert_allclose(got, want, rtol=1e-2)
