"""Optional cross-checks against the frameworks xent imitates (skipped when not installed)."""

import numpy as np
import pytest

import xent


@pytest.fixture
def data():
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((64, 33)) * 2).astype(np.float32)
    y = rng.integers(0, 33, 64)
    t = rng.random((64, 33)).astype(np.float32)
    t /= t.sum(1, keepdims=True)
    return z, y, t


def test_against_torch(data):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z, y, t = data
    zt, yt, tt = torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(t)
    for ls in (0.0, 0.1):
        want = F.cross_entropy(zt, yt, reduction="none", label_smoothing=ls).numpy()
        got = xent.sparse_categorical_crossentropy(y, z, True, label_smoothing=ls)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        want = F.cross_entropy(zt, tt, reduction="none", label_smoothing=ls).numpy()
        got = xent.categorical_crossentropy(t, z, True, label_smoothing=ls)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # torch tensors are accepted directly (through __array__)
    got = xent.SparseCategoricalCrossentropy(from_logits=True)(yt, zt)
    np.testing.assert_allclose(float(got), float(F.cross_entropy(zt, yt)), rtol=1e-6)


def test_against_keras(data):
    import importlib.util
    import os

    # Keras needs a backend; use an installed one rather than the TensorFlow default.
    for backend in ("jax", "torch"):
        if importlib.util.find_spec(backend):
            os.environ.setdefault("KERAS_BACKEND", backend)
            break
    keras = pytest.importorskip("keras")
    z, y, t = data
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    for ls in (0.0, 0.1):
        want = np.asarray(keras.losses.categorical_crossentropy(t, p, label_smoothing=ls))
        np.testing.assert_allclose(
            xent.categorical_crossentropy(t, p, label_smoothing=ls), want, rtol=1e-5, atol=1e-6
        )
        want = np.asarray(
            keras.losses.categorical_crossentropy(t, z, from_logits=True, label_smoothing=ls)
        )
        np.testing.assert_allclose(
            xent.categorical_crossentropy(t, z, True, ls), want, rtol=1e-5, atol=1e-6
        )
    want = np.asarray(keras.losses.sparse_categorical_crossentropy(y, p))
    np.testing.assert_allclose(
        xent.sparse_categorical_crossentropy(y, p), want, rtol=1e-5, atol=1e-6
    )
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        w = np.linspace(0.1, 1.0, len(y)).astype(np.float32)
        want = keras.losses.SparseCategoricalCrossentropy(reduction=reduction)(
            y, p, sample_weight=w
        )
        got = xent.SparseCategoricalCrossentropy(reduction=reduction)(y, p, sample_weight=w)
        np.testing.assert_allclose(float(got), float(np.asarray(want)), rtol=1e-5)
