"""PyTorch autograd through xent: ``loss.backward()`` equals PyTorch's own autograd on the same
loss, ``torch.autograd.gradcheck`` passes in float64 for every option, 16-bit tensors get
gradients of their dtype, and the modules mirror ``torch.nn``'s."""

import numpy as np
import pytest

import xent

import reference

torch = pytest.importorskip("torch")
import xent.torch as xtorch  # noqa: E402  (needs torch)

F = torch.nn.functional

OPTIONS = {
    "plain": {},
    "weights+smoothing": dict(label_smoothing=0.1, weight=True),
    "zloss+softcap": dict(z_loss=0.01, softcap=2.0),
}


def _inputs(shape, kind, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, dtype=dtype, generator=g) * 2
    dim = 1 if len(shape) > 1 else 0
    c = shape[dim]
    if kind == "index":
        t = torch.randint(0, c, shape[:dim] + shape[dim + 1 :], generator=g)
        if t.dim():
            t.view(-1)[0] = -100
    else:
        t = torch.softmax(torch.randn(shape, dtype=dtype, generator=g), dim=dim)
    return z, t, c


def _torch_loss(z, t, reduction, kw):
    """The same loss written with PyTorch's own operations (soft-capping and z-loss too)."""
    kw = dict(kw)
    z_loss, softcap = kw.pop("z_loss", 0.0), kw.pop("softcap", None)
    u = z if softcap is None else softcap * torch.tanh(z / softcap)
    loss = F.cross_entropy(u, t, reduction=reduction, **kw)
    if z_loss:
        lse = torch.logsumexp(u, dim=1 if z.dim() > 1 else 0)
        counted = (t != -100) if not t.is_floating_point() else torch.ones_like(lse, dtype=bool)
        zl = torch.where(counted, z_loss * lse**2, 0.0)
        loss = loss + {"mean": zl.sum() / counted.sum(), "sum": zl.sum(), "none": zl}[reduction]
    return loss


# (N, C, d) logits cannot be overwritten as rows in place (tested as an error in test_grad)
@pytest.mark.parametrize(
    "shape, inplace",
    [((6, 5), False), ((6, 5), True), ((3, 5, 4), False), ((5,), False), ((5,), True)],
)
@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_backward_equals_pytorch_autograd(shape, kind, option, inplace):
    for reduction in ("mean", "sum", "none"):
        z0, t, c = _inputs(shape, kind)
        kw = dict(OPTIONS[option])
        if kw.pop("weight", False):
            kw["weight"] = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
        a, b = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        want = _torch_loss(a, t, reduction, kw)
        up = torch.randn(want.shape, dtype=want.dtype, generator=torch.Generator().manual_seed(1))
        (want * up).sum().backward()
        source = b * 1.0 if inplace else b  # in place needs logits made by an operation
        got = xent.cross_entropy(source, t, reduction=reduction, inplace_backward=inplace, **kw)
        assert got.requires_grad and got.shape == want.shape
        (got * up).sum().backward()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-11, atol=1e-13, msg=reduction)


@pytest.mark.parametrize("kind", ["index", "probs"])
def test_gradcheck_every_option(kind):
    """``torch.autograd.gradcheck`` (finite differences against the analytic backward) for
    each reduction with weights, smoothing, z-loss and soft-capping together, and with
    per-element upstream gradients for ``"none"``; probability targets get their own
    gradient checked too."""
    z, t, c = _inputs((4, 5, 3), kind, seed=3)
    w = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
    kw = dict(weight=w, label_smoothing=0.1, z_loss=0.02, softcap=3.0)
    z.requires_grad_(True)
    if kind == "probs":
        t.requires_grad_(True)
    for reduction in ("mean", "sum", "none"):

        def f(z, t, reduction=reduction):
            return xent.cross_entropy(z, t, reduction=reduction, **kw)

        assert torch.autograd.gradcheck(f, (z, t), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_target_gradient_equals_pytorch():
    z0, t0, c = _inputs((5, 4), "probs", seed=4)
    w = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
    for reduction in ("mean", "none"):
        ta, tb = t0.clone().requires_grad_(True), t0.clone().requires_grad_(True)
        za, zb = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        F.cross_entropy(za, ta, weight=w, label_smoothing=0.2, reduction=reduction).sum().backward()
        got = xent.cross_entropy(zb, tb, weight=w, label_smoothing=0.2, reduction=reduction)
        got.sum().backward()
        torch.testing.assert_close(tb.grad, ta.grad, rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(zb.grad, za.grad, rtol=1e-12, atol=1e-13)


def test_lse_and_z_loss_outputs_are_differentiable():
    z0, t, _ = _inputs((6, 7), "index", seed=5)
    a, b = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    loss, zl, lse = xent.cross_entropy(
        b, t, z_loss=0.1, softcap=3.0, return_z_loss=True, return_lse=True
    )
    (loss + 2.0 * zl + (lse**2).sum()).backward()
    u = 3.0 * torch.tanh(a / 3.0)
    lse_a = torch.logsumexp(u, dim=1)
    counted = t != -100
    zl_a = torch.where(counted, 0.1 * lse_a**2, 0.0).sum() / counted.sum()
    (F.cross_entropy(u, t) + zl_a + 2.0 * zl_a + (lse_a**2).sum()).backward()
    torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float32"])
def test_narrow_tensors_get_gradients_of_their_dtype(dtype):
    dt = getattr(torch, dtype)
    z0, t, _ = _inputs((64, 33), "index", seed=6)
    z = z0.to(dt).requires_grad_(True)
    for reduction in ("mean", "none"):
        z.grad = None
        loss = xent.cross_entropy(z, t, reduction=reduction, label_smoothing=0.1)
        assert loss.dtype == torch.float32
        loss.sum().backward()
        assert z.grad.dtype == dt and z.grad.shape == z.shape
        want = reference.torch_cross_entropy_grad(
            z.detach().double().numpy(), t.numpy(), reduction=reduction, label_smoothing=0.1
        )
        step = {"bfloat16": 2.0**-7, "float16": 2.0**-10, "float32": 2.0**-22}[dtype]
        np.testing.assert_allclose(
            z.grad.double().numpy(), want, rtol=step, atol=2.0**-24 + 1e-6 * abs(want).max()
        )


def test_inplace_backward_rules():
    z0, t, _ = _inputs((8, 6), "index", seed=7)
    leaf = z0.clone().requires_grad_(True)
    with pytest.raises(ValueError, match="leaf tensor"):
        xent.cross_entropy(leaf, t, inplace_backward=True)
    with pytest.raises(ValueError, match="return_lse"):
        xent.cross_entropy(leaf * 1.0, t, inplace_backward=True, return_lse=True)
    with pytest.raises(ValueError, match="torch tensor input that requires grad"):
        xent.cross_entropy(z0.numpy(), t.numpy(), inplace_backward=True)
    # logits another operation saved for its own backward: autograd notices the overwrite
    x = z0.clone().requires_grad_(True)
    saved = torch.exp(x)  # exp's backward needs its output
    loss = xent.cross_entropy(saved, t, inplace_backward=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()
    # a matmul's output (what a model's last layer gives) is free to overwrite
    w = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    xent.cross_entropy(z0 @ w, t, inplace_backward=True).backward()
    g_inplace = w.grad.clone()
    retained = xent.cross_entropy(z0 @ w, t, inplace_backward=True)
    retained.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        retained.backward()  # the logits hold the gradient now: nothing to recompute from
    w.grad = None
    w.grad = None
    F.cross_entropy(z0 @ w, t).backward()
    torch.testing.assert_close(g_inplace, w.grad, rtol=1e-12, atol=1e-13)


def test_a_retained_graph_gives_the_same_gradient_twice():
    z0, t, _ = _inputs((5, 4), "index", seed=8)
    z = z0.clone().requires_grad_(True)
    loss = xent.cross_entropy(z, t)
    loss.backward(retain_graph=True)
    first = z.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(z.grad, 3 * first)


def test_all_ignored_mean_is_nan_with_zero_gradient_as_pytorch():
    z = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    loss = xent.cross_entropy(z, torch.full((3,), -100))
    loss.backward()
    assert torch.isnan(loss) and (z.grad == 0).all()


def test_no_grad_and_detached_calls_return_plain_tensors():
    z0, t, _ = _inputs((4, 3), "index")
    z = z0.clone().requires_grad_(True)
    with torch.no_grad():
        assert not xent.cross_entropy(z, t).requires_grad
    assert not xent.cross_entropy(z0, t).requires_grad


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_loss_backward_equals_pytorch(reduction):
    z0, t, c = _inputs((3, 5, 2), "index", seed=9)
    logp = torch.log_softmax(z0, 1)
    w = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
    a, b = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    want = F.nll_loss(a, t, weight=w, reduction=reduction)
    got = xent.nll_loss(b, t, weight=w, reduction=reduction)
    up = torch.rand(want.shape, dtype=torch.float64)
    (want * up).sum().backward()
    (got * up).sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(b.grad, a.grad)


def test_modules_mirror_torch_nn():
    z0, t, c = _inputs((6, 4), "index", seed=10)
    t = torch.tensor([0, 1, 2, 3, 2, 1])  # NLLLoss below ignores 2
    w = torch.linspace(0.5, 2.0, c, dtype=torch.float64)
    for ours, theirs in (
        (xtorch.CrossEntropyLoss(w, label_smoothing=0.1),
         torch.nn.CrossEntropyLoss(w, label_smoothing=0.1)),
        (xtorch.CrossEntropyLoss(reduction="sum"), torch.nn.CrossEntropyLoss(reduction="sum")),
        (xtorch.NLLLoss(w, ignore_index=2), torch.nn.NLLLoss(w, ignore_index=2)),
    ):  # fmt: skip
        a, b = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        x = torch.log_softmax if isinstance(ours, xtorch.NLLLoss) else (lambda v, d: v)
        want, got = theirs(x(a, 1), t), ours(x(b, 1), t)
        want.backward()
        got.backward()
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(b.grad, a.grad)
        assert set(ours.state_dict()) == set(theirs.state_dict())
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        legacy = xtorch.CrossEntropyLoss(reduce=False)
    assert legacy.reduction == "none"
    with pytest.warns(UserWarning, match="reduction='sum'"):
        assert xtorch.CrossEntropyLoss(size_average=False).reduction == "sum"


def test_class_weights_that_require_grad_are_refused():
    """PyTorch refuses them for index targets; xent refuses them for both target kinds
    rather than return a loss whose weight gradient would silently be missing (README)."""
    z, t, c = _inputs((3, 4), "index")
    w = torch.rand(c, dtype=torch.float64, requires_grad=True)
    for call in (xent.cross_entropy, xent.nll_loss):
        with pytest.raises(
            RuntimeError, match="not differentiable with respect to argument 'weight'"
        ):
            call(z, t, weight=w)
    with torch.no_grad():
        assert torch.isfinite(xent.cross_entropy(z, t, weight=w))


@pytest.mark.parametrize("c", [10, 1_000])  # the short-row and the long-row gradient kernels
def test_backward_from_the_saved_lse_keeps_large_logits_accurate(c):
    # reduction="none" runs the gradient kernel from the forward's saved lse; rounded to
    # float32 it cost the gradient |lse| 6e-8 relative (1.8e-4 at logits near 3000)
    g = torch.Generator().manual_seed(3)
    z = (torch.randn(32, c, generator=g) * 3 + 3000).float()
    t = torch.randint(0, c, (32,), generator=g)
    up = torch.rand(32, generator=g, dtype=torch.float64).float()
    za, zb = z.double().requires_grad_(), z.clone().requires_grad_()
    (F.cross_entropy(za, t, reduction="none") * up.double()).sum().backward()
    (xent.cross_entropy(zb, t, reduction="none") * up).sum().backward()
    want = za.grad.numpy()
    np.testing.assert_allclose(zb.grad.numpy(), want, rtol=0, atol=2e-5 * np.abs(want).max())
