"""PyTorch front end (``cross_entropy``, ``nll_loss``) against the reference formulas,
PyTorch's published values, and PyTorch itself when installed."""

import itertools

import numpy as np
import pytest

import xent

import reference as ref
from helpers import tolerances

LOGITS = [[1, 2, 3], [0, 0, 0], [2, -1, 0.5], [0.3, 0.2, 0.1]]
TARGET = [2, 0, 1, -100]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_known_values(dtype):
    z = np.array(LOGITS, dtype)
    t = np.array(TARGET)
    rtol = 1e-6
    np.testing.assert_allclose(
        xent.cross_entropy(z, t, reduction="none"),
        [0.4076059, 1.0986123, 3.2413113, 0],
        rtol=rtol,
        atol=1e-7,
    )
    np.testing.assert_allclose(xent.cross_entropy(z, t), 1.5825100, rtol=rtol)
    np.testing.assert_allclose(xent.cross_entropy(z, t, weight=[1, 2, 3]), 1.4673420, rtol=rtol)
    np.testing.assert_allclose(
        xent.cross_entropy(z, t, label_smoothing=0.1, reduction="none"),
        [0.5076059, 1.0986123, 3.0913112, 0],
        rtol=rtol,
        atol=1e-7,
    )
    np.testing.assert_allclose(xent.cross_entropy(z, t, label_smoothing=0.1), 1.5658432, rtol=rtol)
    np.testing.assert_allclose(
        xent.cross_entropy(z, t, weight=[1, 2, 3], label_smoothing=0.1), 1.4594144, rtol=rtol
    )
    assert xent.cross_entropy(z, t).dtype == dtype


SHAPES = [(7,), (5, 7), (4, 7, 3), (2, 7, 3, 2), (3, 1)]


def _inputs(rng, shape, dtype):
    z = (rng.standard_normal(shape) * 3).astype(dtype)
    c = shape[0] if len(shape) == 1 else shape[1]
    idx_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    y = rng.integers(0, c, idx_shape)
    p = rng.random(shape)
    p /= p.sum(axis=0 if len(shape) == 1 else 1, keepdims=True)
    return z, y, p.astype(dtype), c


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_index_targets_grid(rng, shape, dtype):
    z, y, _, c = _inputs(rng, shape, dtype)
    rtol, atol = tolerances(dtype)
    weights = [None, rng.random(c) * 2]
    for weight, ignore, ls, red in itertools.product(
        weights, [-100, 0], [0.0, 0.1, 1.0], ["none", "mean", "sum"]
    ):
        got = xent.cross_entropy(
            z, y, weight=weight, ignore_index=ignore, reduction=red, label_smoothing=ls
        )
        want = ref.torch_cross_entropy(z, y, weight, ignore, red, ls)
        np.testing.assert_allclose(
            got, want, rtol=rtol, atol=atol, err_msg=f"{weight is not None} {ignore} {ls} {red}"
        )
        assert np.shape(got) == np.shape(want)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probability_targets_grid(rng, shape, dtype):
    z, _, p, c = _inputs(rng, shape, dtype)
    rtol, atol = tolerances(dtype)
    for weight, ls, red in itertools.product(
        [None, rng.random(c) * 2], [0.0, 0.2], ["none", "mean", "sum"]
    ):
        got = xent.cross_entropy(z, p, weight=weight, reduction=red, label_smoothing=ls)
        want = ref.torch_cross_entropy(z, p, weight, -100, red, ls)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_all_ignored_mean_is_nan_sum_is_zero():
    z = np.array(LOGITS)
    t = np.full(4, -100)
    assert np.isnan(xent.cross_entropy(z, t))
    assert xent.cross_entropy(z, t, reduction="sum") == 0.0
    assert np.isnan(xent.nll_loss(z, t))


def test_probability_mean_divides_by_element_count(rng):
    z = rng.standard_normal((6, 4))
    p = rng.random((6, 4))
    w = np.array([1.0, 2.0, 3.0, 4.0])
    per = xent.cross_entropy(z, p, weight=w, reduction="none")
    np.testing.assert_allclose(xent.cross_entropy(z, p, weight=w), per.sum() / 6, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nll_loss_grid(rng, dtype):
    rtol, atol = tolerances(dtype)
    for shape in SHAPES:
        z, y, _, c = _inputs(rng, shape, dtype)
        logp = (
            z - np.log(np.exp(z.astype(np.float64)).sum(0 if z.ndim == 1 else 1, keepdims=True))
        ).astype(dtype)
        for weight, red in itertools.product([None, rng.random(c)], ["none", "mean", "sum"]):
            got = xent.nll_loss(logp, y, weight=weight, reduction=red)
            np.testing.assert_allclose(
                got, ref.torch_nll_loss(logp, y, weight, -100, red), rtol=rtol, atol=atol
            )
            # from logits, the same number
            np.testing.assert_allclose(
                got,
                xent.cross_entropy(z, y, weight=weight, reduction=red),
                rtol=10 * rtol,
                atol=10 * atol,
            )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda z: xent.cross_entropy(z, [2, 0, 3, 1]),
            r"target has the out-of-range label 3 at index 2",
        ),
        (lambda z: xent.cross_entropy(z, [2, 0, -1, 1]), r"-1 at index 2.*ignore_index=-100"),
        (lambda z: xent.cross_entropy(z, [2, 0, 1, 1], label_smoothing=-0.1), "label_smoothing"),
        (lambda z: xent.cross_entropy(z, [2, 0, 1, 1], label_smoothing=1.5), "label_smoothing"),
        (
            lambda z: xent.cross_entropy(z, [2, 0, 1, 1], weight=[1, 2]),
            r"weight tensor should be defined either for all 3 classes or no classes but got "
            r"weight tensor of shape: \[2\]",
        ),
        (
            lambda z: xent.cross_entropy(z, [2, 0, 1, 1], weight=[1, np.nan, 2]),
            "weight has the non-finite",
        ),
        (lambda z: xent.cross_entropy(z, [2, 0, 1, 1], reduction="avg"), "reduction='avg'"),
        (
            lambda z: xent.cross_entropy(z, [2.0, 0, 1, 1]),
            r"expected target dtype to be Long or Byte, but got Double \(a target of shape "
            r"\(4,\), not input's shape \(4, 3\), holds class indices\)",
        ),
        (
            lambda z: xent.cross_entropy(z, [2, 0, 1]),
            r"Expected input batch_size \(4\) to match target batch_size \(3\)",
        ),
        (lambda z: xent.cross_entropy(z, [2, 0, 1, 1], z_loss=-1), "z_loss"),
        (lambda z: xent.cross_entropy(z, [2, 0, 1, 1], softcap=0), "softcap"),
        (lambda z: xent.nll_loss(z, [2, 0, 9, 1]), r"9 at index 2"),
    ],
)
def test_errors_name_argument_value_and_position(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.array(LOGITS))


def test_type_errors():
    with pytest.raises(TypeError, match="input"):
        xent.cross_entropy(np.array([[1, 2]]), [0])
    with pytest.raises(TypeError, match="ignore_index"):
        xent.cross_entropy(np.array(LOGITS), TARGET, ignore_index=True)
    with pytest.raises(TypeError, match="expected target dtype to be Long or Byte"):
        xent.nll_loss(np.array(LOGITS), np.array([0.0, 1, 2, 0]))


def test_errors_are_also_the_runtime_errors_pytorch_raises():
    """``except RuntimeError`` written for PyTorch still catches xent's errors."""
    z = np.array(LOGITS)
    for call in (
        lambda: xent.cross_entropy(z, [2, 0, 1]),
        lambda: xent.cross_entropy(z, [2, 0, 1, 1], weight=[1, 2]),
        lambda: xent.cross_entropy(z, np.eye(3)[[2, 0, 1, 1]], ignore_index=0),
        lambda: xent.cross_entropy(z, [2, 0, 1, 1], label_smoothing=1.5),
        lambda: xent.nll_loss(z, np.zeros((4, 3), np.int64)),
    ):
        with pytest.raises(RuntimeError) as caught:
            call()
        assert isinstance(caught.value, (ValueError, TypeError))
        assert isinstance(caught.value, xent.TorchInputError)


def test_inputs_unchanged(rng):
    z, y, p, c = _inputs(rng, (5, 7, 3), np.float32)
    w = rng.random(c)
    copies = [a.copy() for a in (z, y, p, w)]
    xent.cross_entropy(z, y, weight=w, label_smoothing=0.1, softcap=2.0, z_loss=1e-3)
    xent.cross_entropy(z, p, weight=w, label_smoothing=0.1, softcap=2.0)
    for a, b in zip((z, y, p, w), copies):
        np.testing.assert_array_equal(a, b)


def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    for shape in SHAPES[1:]:
        z, y, p, c = _inputs(rng, shape, np.float32)
        y = np.where(rng.random(y.shape) < 0.2, -100, y)
        w = rng.random(c).astype(np.float32)
        for weight, ls, red in itertools.product([None, w], [0.0, 0.1], ["none", "mean", "sum"]):
            tw = None if weight is None else torch.from_numpy(weight)
            want = F.cross_entropy(
                torch.from_numpy(z),
                torch.from_numpy(y),
                weight=tw,
                reduction=red,
                label_smoothing=ls,
            ).numpy()
            got = xent.cross_entropy(z, y, weight=weight, reduction=red, label_smoothing=ls)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
            want = F.cross_entropy(
                torch.from_numpy(z),
                torch.from_numpy(p),
                weight=tw,
                reduction=red,
                label_smoothing=ls,
            ).numpy()
            got = xent.cross_entropy(z, p, weight=weight, reduction=red, label_smoothing=ls)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
            logp = torch.log_softmax(torch.from_numpy(z), 1)
            want = F.nll_loss(logp, torch.from_numpy(y), weight=tw, reduction=red).numpy()
            got = xent.nll_loss(logp.numpy(), y, weight=weight, reduction=red)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
