"""The gradient: ``xent.value_and_grad`` and the engine's fused kernels against the float64
reference written from the formulas (``reference.torch_cross_entropy_grad``), which is itself
checked against finite differences of the reference loss; edge rules; in place."""

import numpy as np
import pytest

import xent
from xent import _engine, kernels
from xent._engine import RowOptions

import reference

OPTIONS = {
    "plain": {},
    "weights+smoothing": dict(weight=[0.5, 2.0, 1.0, 0.25, 3.0], label_smoothing=0.15),
    "zloss+softcap": dict(z_loss=0.01, softcap=2.5),
    "everything": dict(
        weight=[1.5, 0.5, 1.0, 2.0, 1.0], label_smoothing=0.1, z_loss=0.02, softcap=4.0
    ),
}


def _case(rng, shape, kind):
    z = rng.normal(size=shape) * 3
    c = shape[1] if len(shape) > 1 else shape[0]
    if kind == "index":
        tshape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
        t = rng.integers(0, c, tshape)
        if t.ndim:
            t.reshape(-1)[0] = -100  # one ignored element
    else:
        dim = 1 if len(shape) > 1 else 0
        batch = shape[:dim] + shape[dim + 1 :]
        t = rng.dirichlet(np.ones(c), size=batch) if batch else rng.dirichlet(np.ones(c))
        t = np.moveaxis(t, -1, dim)
    return z, t


def test_reference_gradient_is_the_derivative_of_the_reference_loss(rng):
    """Central differences of ``reference.torch_cross_entropy`` (float64) agree with
    ``reference.torch_cross_entropy_grad``, for every option at once: the formula the tests
    trust is the loss's derivative."""
    for kind in ("index", "probs"):
        z, t = _case(rng, (4, 5, 2), kind)
        kw = dict(OPTIONS["everything"])
        if kind == "probs":
            kw.pop("weight")
        for reduction in ("mean", "sum", "none"):
            go = rng.normal(size=(4, 2)) if reduction == "none" else 1.7
            want = reference.torch_cross_entropy_grad(
                z, t, reduction=reduction, grad_output=go, **kw
            )
            fd = np.zeros_like(z)
            h = 1e-6
            for k in np.ndindex(z.shape):
                zp, zm = z.copy(), z.copy()
                zp[k] += h
                zm[k] -= h
                f = [
                    np.sum(go * reference.torch_cross_entropy(a, t, reduction=reduction, **kw))
                    for a in (zp, zm)
                ]
                fd[k] = (f[0] - f[1]) / (2 * h)
            np.testing.assert_allclose(want, fd, rtol=1e-6, atol=1e-8, err_msg=(kind, reduction))


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 4), (5,)])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_value_and_grad_equals_the_reference(rng, kind, shape, option):
    z, t = _case(rng, shape, kind)
    kw = dict(OPTIONS[option])
    if kind == "probs" and "label_smoothing" in kw:
        kw["label_smoothing"] = 0.0  # covered with index targets; keep both paths apart
    for reduction in ("mean", "sum", "none"):
        loss, grad = xent.value_and_grad(z, t, reduction=reduction, **kw)
        want_loss = reference.torch_cross_entropy(z, t, reduction=reduction, **kw)
        want = reference.torch_cross_entropy_grad(z, t, reduction=reduction, **kw)
        assert grad.shape == z.shape and grad.dtype == np.float64
        np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grad, want, rtol=1e-11, atol=1e-14, err_msg=reduction)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_gradient_of_narrow_inputs_is_in_their_dtype(rng, dtype, kind):
    """float32 and the 16-bit formats: computed in float32, the gradient rounded to the input's
    dtype; within the rounding of that dtype of the float64 reference on the same values."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    np_dtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    z, t = _case(rng, (300, 37), kind)
    z = z.astype(np_dtype)
    exact = z.astype(np.float64)
    kw = dict(weight=rng.uniform(0.5, 2, 37), z_loss=1e-3)
    if kind == "probs":
        t = t.astype(np.float32)
    loss, grad = xent.value_and_grad(z, t, **kw)
    assert grad.dtype == np_dtype and grad.shape == z.shape
    assert np.asarray(loss).dtype == np.float32
    want = reference.torch_cross_entropy_grad(exact, t, **kw)
    spacing = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}[dtype]
    # one unit in the last place, or float16's subnormal step (gradients below 6e-5 there)
    tiny = 2.0**-24 if dtype == "float16" else 0.0
    atol = max(1e-6 * np.abs(want).max(), tiny)
    np.testing.assert_allclose(grad.astype(np.float64), want, rtol=spacing, atol=atol)


def test_every_row_path_of_the_kernel(rng):
    """Rows long enough for several stream blocks, a guessed shift that is rejected (the
    exact two-pass path), many rows (several row chunks), float32 and float64."""
    n, c = 600, 2_500
    z = rng.normal(size=(n, c))
    z[::7, 1_000:1_010] += 40.0  # far above the first elements: the guess is rejected
    y = rng.integers(0, c, n)
    y[::5] = -100
    for dtype, rtol in ((np.float64, 1e-11), (np.float32, 2e-5)):
        zz = z.astype(dtype)
        loss, grad = xent.value_and_grad(zz, y, label_smoothing=0.05)
        want = reference.torch_cross_entropy_grad(zz, y, label_smoothing=0.05)
        np.testing.assert_allclose(grad, want, rtol=rtol, atol=rtol * np.abs(want).max())
        want_loss = reference.torch_cross_entropy(zz, y, label_smoothing=0.05)
        np.testing.assert_allclose(loss, want_loss, rtol=rtol)


def test_edge_rules(rng):
    """-inf logits with zero target: zero gradient, never NaN; ignored rows: zero rows even
    when their logits are NaN; all ignored with "mean": the loss is NaN (PyTorch) and the
    gradient is zero (PyTorch's too); a row of only -inf: NaN, as PyTorch."""
    z = rng.normal(size=(4, 6))
    z[0, 2] = -np.inf
    z[1, :] = np.nan
    y = np.array([0, -100, 3, 5])
    for kw in ({"softcap": 3.0}, {}):  # the per-row kernel, and the short-row path
        loss, grad = xent.value_and_grad(z, y, **kw)
        assert np.isfinite(loss)
        assert grad[0, 2] == 0.0 and np.isfinite(grad[0]).all()
        assert (grad[1] == 0.0).all()
    probs = np.full((4, 6), 1 / 6)
    probs[0] = [0.5, 0.5, 0, 0, 0, 0]
    z[1, :] = 0.0
    _, gd = xent.value_and_grad(z, probs)
    assert gd[0, 2] == 0.0 and np.isfinite(gd).all()
    loss, grad = xent.value_and_grad(z, np.full(4, -100))
    assert np.isnan(loss) and (grad == 0.0).all()
    z[2, :] = -np.inf
    _, grad = xent.value_and_grad(z, y)
    assert np.isnan(grad[2]).all() and np.isfinite(grad[[0, 3]]).all()


def test_a_saved_lse_gives_the_fused_gradient(rng):
    """The backward-only kernel (from a forward's log-sum-exp) equals the fused pass."""
    z = rng.normal(size=(50, 40)).astype(np.float32)
    y = rng.integers(0, 40, 50)
    t = rng.dirichlet(np.ones(40), 50)
    opts = RowOptions(smoothing=0.1, softcap=5.0, class_weights=rng.uniform(0.5, 2, 40))
    g_loss, g_zsq, g_lse = rng.uniform(size=50), rng.uniform(size=50), rng.normal(size=50)
    for kind, second in (("sparse", y), ("dense", t.astype(np.float32))):
        loss, lse, fused = _engine.grad_rows(kind, z, second, opts, g_loss, g_zsq, g_lse=g_lse)
        _, _, again = _engine.grad_rows(kind, z, second, opts, g_loss, g_zsq, g_lse=g_lse, lse=lse)
        np.testing.assert_allclose(again, fused, rtol=2e-5, atol=2e-7)


@pytest.mark.parametrize("c", [10, 40, 100, 1_000])  # short rows, small rows, long rows
def test_large_logits_keep_the_gradient_accurate(rng, c):
    """Logits near +-3000 (float32): the softmax from a saved lse rounded to float32 was off
    by ``|lse| 6e-8`` relative (1.8e-4 here); two tied logits of 1e38 each got 1 instead of
    1/2 (float64 has lost log 2 there too).  Fused, from the saved float64 lse, and from an lse
    rounded to float32."""
    n = 64
    y = rng.integers(0, c, n)
    for offset in (3000.0, -3000.0):
        z = (rng.normal(size=(n, c)) * 3 + offset).astype(np.float32)
        want = reference.torch_cross_entropy_grad(z.astype(np.float64), y)
        _, grad = xent.value_and_grad(z, y)
        np.testing.assert_allclose(grad, want, rtol=0, atol=2e-5 * np.abs(want).max())
        g_loss, g_zsq = np.full(n, 1.0 / n), np.zeros(n)
        opts = RowOptions(want_lse=True)
        _, lse64 = _engine.sparse_rows(z, y, opts, lse64=True)
        assert lse64.dtype == np.float64
        # rows this short take the saved lse as it is; the per-row kernels renormalise
        short = c * 4 <= kernels.SHORT_ROW_BYTES
        for lse in [lse64] if short else [lse64, lse64.astype(np.float32)]:
            _, _, again = _engine.grad_rows("sparse", z, y, RowOptions(), g_loss, g_zsq, lse=lse)
            np.testing.assert_allclose(again, want, rtol=0, atol=2e-5 * np.abs(want).max())
    z = np.zeros((2, c), np.float32)
    z[:, :7] = [4.68, 1e38, 24.75, 0, -3.67, 1e38, 24.75]
    y = np.array([4, 1])
    _, grad = xent.value_and_grad(z, y)
    np.testing.assert_array_equal(grad[:, [1, 5]], [[0.25, 0.25], [-0.25, 0.25]])
    assert not grad[:, [0, 2, 3, 6]].any()
    _, lse64 = _engine.sparse_rows(z, y, RowOptions(want_lse=True), lse64=True)
    _, _, again = _engine.grad_rows(
        "sparse", z, y, RowOptions(), np.full(2, 0.5), np.zeros(2), lse=lse64
    )
    np.testing.assert_array_equal(again, grad)


def test_class_mask_rows_give_zero_gradient_where_masked(rng):
    z = rng.normal(size=(20, 9))
    keep = rng.uniform(size=(20, 9)) > 0.3
    y = np.array([int(np.flatnonzero(k)[0]) if k.any() else 0 for k in keep])
    keep[np.arange(20), y] = True
    opts = RowOptions(class_mask=keep)
    _, _, g = _engine.grad_rows("sparse", z, y, opts, np.ones(20), np.zeros(20))
    assert (g[~keep] == 0.0).all()
    zm = np.where(keep, z, -np.inf)
    want = reference.torch_cross_entropy_grad(zm, y, reduction="sum")
    np.testing.assert_allclose(np.where(keep, g, 0.0), np.where(keep, want, 0.0), rtol=1e-12)


def test_inplace_overwrites_the_input_and_equals_a_new_gradient(rng):
    z = rng.normal(size=(30, 11)).astype(np.float32)
    y = rng.integers(0, 11, 30)
    loss, grad = xent.value_and_grad(z, y, z_loss=1e-3)
    work = z.copy()
    loss2, same = xent.value_and_grad(work, y, z_loss=1e-3, inplace=True)
    assert same is work
    np.testing.assert_array_equal(work, grad)
    assert loss2 == loss
    strided = np.asfortranarray(z)  # any strides, still the caller's memory
    xent.value_and_grad(strided, y, z_loss=1e-3, inplace=True)
    np.testing.assert_allclose(strided, grad, rtol=1e-6)  # other summation order


def test_inputs_are_not_modified_and_inplace_refuses_what_it_cannot_write(rng):
    z = rng.normal(size=(8, 5))
    keep = z.copy()
    xent.value_and_grad(z, rng.integers(0, 5, 8))
    np.testing.assert_array_equal(z, keep)
    frozen = z.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="inplace=True overwrites input"):
        xent.value_and_grad(frozen, np.zeros(8, int), inplace=True)
    with pytest.raises(ValueError, match="got list"):
        xent.value_and_grad(z.tolist(), np.zeros(8, int), inplace=True)
    with pytest.raises(ValueError, match=r"shape \(2, 5, 4\)"):
        xent.value_and_grad(rng.normal(size=(2, 5, 4)), np.zeros((2, 4), int), inplace=True)


def test_errors_name_the_argument(rng):
    z = rng.normal(size=(3, 4))
    with pytest.raises(ValueError, match="reduction='avg'"):
        xent.value_and_grad(z, [0, 1, 2], reduction="avg")
    with pytest.raises(ValueError, match="target has the out-of-range label 7 at index 1"):
        xent.value_and_grad(z, [0, 7, 2])
    with pytest.raises(ValueError, match="label_smoothing"):
        xent.value_and_grad(z, [0, 1, 2], label_smoothing=1.5)


def test_gradient_memory_is_reused_only_when_nobody_holds_it(rng):
    """Large gradients come from reused buffers (no page faults in a training loop), but a
    gradient the caller still holds, or a view of it, is never handed out again."""
    z = rng.normal(size=(600, 1_000)).astype(np.float32)  # 2.4 MB gradients
    y = rng.integers(0, 1_000, 600)
    _, first = xent.value_and_grad(z, y)
    keep = first.copy()
    _, second = xent.value_and_grad(z * 2, y)
    assert not np.shares_memory(first, second)
    view = second[5:10]
    del second
    _, third = xent.value_and_grad(z * 3, y)
    assert not np.shares_memory(third, view) and not np.shares_memory(third, first)
    np.testing.assert_array_equal(first, keep)
    address = third.__array_interface__["data"][0]
    del third
    _, fourth = xent.value_and_grad(z, y)  # the memory third left behind
    assert fourth.__array_interface__["data"][0] == address
    np.testing.assert_array_equal(fourth, keep)
