"""optax front end against the reference formulas, optax's documented values, and optax
itself when installed."""

import numpy as np
import pytest

import xent
from xent import _engine

import reference as ref
from helpers import tolerances

LOGITS = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], np.float32)
ONE_HOT = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)


def test_documented_values():
    np.testing.assert_allclose(
        xent.softmax_cross_entropy(LOGITS, ONE_HOT), [0.2761297, 2.951799], rtol=1e-6
    )
    np.testing.assert_allclose(
        xent.softmax_cross_entropy_with_integer_labels(LOGITS, [0, 1]),
        [0.2761297, 2.951799],
        rtol=1e-6,
    )
    mask = np.array([[True, True, False]])
    np.testing.assert_allclose(
        xent.softmax_cross_entropy(LOGITS, ONE_HOT, where=mask), [0.1269281, 2.2155194], rtol=1e-6
    )
    np.testing.assert_allclose(
        xent.softmax_cross_entropy_with_integer_labels(LOGITS, [0, 1], where=mask),
        [0.1269281, 2.2155194],
        rtol=1e-6,
    )


def _case(rng, shape, dtype, axis):
    z = (rng.standard_normal(shape) * 2).astype(dtype)
    c = shape[axis]
    batch = tuple(s for k, s in enumerate(shape) if k != axis % len(shape))
    y = rng.integers(0, c, batch)
    t = rng.random(shape)
    return z, y, t, c, batch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, axis", [((6, 5), -1), ((4, 5, 3), 1), ((3, 2, 17), -1), ((9, 1), -1)]
)
def test_grid_with_masks(rng, dtype, shape, axis):
    z, y, t, c, batch = _case(rng, shape, dtype, axis)
    rtol, atol = tolerances(dtype)
    row_mask = rng.random(batch) < 0.7
    class_mask = rng.random(shape) < 0.8
    # keep every label's own class (else the integer loss refuses, tested below)
    yy = np.expand_dims(y, axis)
    np.put_along_axis(class_mask, yy, True, axis)
    bshape = [1] * len(shape)
    bshape[axis] = c
    broadcast_mask = (np.arange(c) != c - 1).reshape(bshape) | (c == 1)
    for where in (None, row_mask, class_mask, broadcast_mask):
        got = xent.softmax_cross_entropy(z, t, axis=axis, where=where)
        np.testing.assert_allclose(
            got, ref.optax_softmax_cross_entropy(z, t, where, axis), rtol=rtol, atol=atol
        )
        if where is broadcast_mask and c > 1:
            ok = y != c - 1
            where_i = np.broadcast_to(where, shape)
            got = xent.softmax_cross_entropy_with_integer_labels(
                z, np.where(ok, y, 0), axis=axis, where=where_i
            )
            want = ref.optax_integer_labels(z, np.where(ok, y, 0), where_i, axis)
        else:
            got = xent.softmax_cross_entropy_with_integer_labels(z, y, axis=axis, where=where)
            want = ref.optax_integer_labels(z, y, where, axis)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_broadcast_labels_are_not_copied(rng):
    z = rng.standard_normal((1000, 50))
    uniform = np.full((1, 50), 1 / 50)
    got = xent.softmax_cross_entropy(z, uniform)
    np.testing.assert_allclose(
        got, ref.optax_softmax_cross_entropy(z, np.broadcast_to(uniform, z.shape)), rtol=1e-12
    )


@pytest.mark.parametrize("label_dtype", ["uint8", "int8", "int16", "uint16", "int32", "int64"])
@pytest.mark.parametrize("c", [10, 300])  # short rows and the per-row kernels
def test_integer_label_dtypes_give_the_reference(rng, label_dtype, c, monkeypatch):
    """JAX's int32 labels (and uint8/int16) reach the kernels as they are, the others as
    int64: each gives the reference, with and without a class mask."""
    seen = []

    def sparse_rows(rows, labels, options, **kw):
        seen.append(labels.dtype)
        return run(rows, labels, options, **kw)

    run = _engine.sparse_rows
    monkeypatch.setattr(_engine, "sparse_rows", sparse_rows)
    native = label_dtype in ("uint8", "int16", "int32", "int64")
    z = (rng.standard_normal((257, c)) * 3).astype(np.float32)
    y = rng.integers(0, min(c, 120), 257)
    mask = rng.random((257, c)) < 0.8
    mask[np.arange(257), y] = True
    for where in (None, mask):
        got = xent.softmax_cross_entropy_with_integer_labels(z, y.astype(label_dtype), where=where)
        want = ref.optax_softmax_cross_entropy(z, np.eye(c)[y], where=where)
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    assert seen == [np.dtype(label_dtype if native else "int64")] * 2


def test_minus_inf_with_zero_label_is_not_nan():
    z = np.array([[0.0, -np.inf, 1.0]])
    got = xent.softmax_cross_entropy(z, [[1.0, 0.0, 0.0]])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(
        got, ref.optax_softmax_cross_entropy(z, [[1.0, 0.0, 0.0]]), rtol=1e-12
    )


@pytest.mark.parametrize(
    "labels, where, match",
    [
        ([0, 3], None, r"labels has the out-of-range label 3 at index 1"),
        ([-1, 1], None, r"-1 at index 0"),
        (
            [0, 2],
            np.array([[True, True, False]]),
            r"labels has 2 at index \(1,\), a class that where excludes",
        ),
        ([0, 1], np.array([[[True]]]), "where must have 1 dimensions"),
        ([0, 1], np.array([True, False, True]), "does not broadcast to the batch shape"),
    ],
)
def test_errors(labels, where, match):
    with pytest.raises(ValueError, match=match):
        xent.softmax_cross_entropy_with_integer_labels(LOGITS, labels, where=where)


def test_type_errors():
    with pytest.raises(TypeError, match="integer class indices"):
        xent.softmax_cross_entropy_with_integer_labels(LOGITS, [0.0, 1.0])
    with pytest.raises(TypeError, match="boolean mask"):
        xent.softmax_cross_entropy(LOGITS, ONE_HOT, where=np.array([1, 0]))
    with pytest.raises(TypeError, match="axis"):
        xent.softmax_cross_entropy(LOGITS, ONE_HOT, axis=(0, 1))


def test_against_optax(rng):
    optax = pytest.importorskip("optax")
    jnp = pytest.importorskip("jax.numpy")
    for shape, axis in [((8, 11), -1), ((3, 11, 4), 1)]:
        z, y, t, c, batch = _case(rng, shape, np.float32, axis)
        class_mask = rng.random(shape) < 0.8
        np.put_along_axis(class_mask, np.expand_dims(y, axis), True, axis)
        row_mask = rng.random(batch) < 0.6
        for where in (None, row_mask, class_mask):
            jw = None if where is None else jnp.asarray(where)
            want = np.asarray(optax.softmax_cross_entropy(jnp.asarray(z), jnp.asarray(t), axis, jw))
            got = xent.softmax_cross_entropy(z, t, axis, where)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
            want = np.asarray(
                optax.softmax_cross_entropy_with_integer_labels(
                    jnp.asarray(z), jnp.asarray(y), axis, jw
                )
            )
            got = xent.softmax_cross_entropy_with_integer_labels(z, y, axis, where)
            np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
