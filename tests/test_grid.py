"""Every kernel path against the float64 reference over a grid of shapes and options.

Class counts sit on the vectorisation boundaries (1, 7, 8, 15, 16, 17, 127, 128, 129) and
beyond the kernels' summation block (1000, 2500).
"""

import numpy as np
import pytest

import xent

import reference
from helpers import layouts, tolerances

CLASSES = [1, 7, 8, 15, 16, 17, 127, 128, 129, 1000, 2500]
DTYPES = [np.float32, np.float64]


def GRID(test):
    """classes x dtype x logits-or-probabilities x smoothing."""
    for name, values in [
        ("smoothing", [0.0, 0.1]),
        ("from_logits", [True, False]),
        ("dtype", DTYPES),
        ("c", CLASSES),
    ]:
        test = pytest.mark.parametrize(name, values)(test)
    return test


def make_preds(rng, shape, dtype, from_logits, axis=-1):
    if from_logits:
        return (rng.standard_normal(shape) * 3).astype(dtype)
    p = rng.random(shape) ** 3  # skewed, with some near-zero entries
    p[rng.random(shape) < 0.05] = 0.0
    p /= np.maximum(p.sum(axis=axis, keepdims=True), 1e-300)
    return p.astype(dtype)


def soft_targets(rng, shape, axis=-1):
    t = rng.random(shape)
    t[rng.random(shape) < 0.3] = 0.0
    return t / np.maximum(t.sum(axis=axis, keepdims=True), 1e-300)


def check(got, want, dtype):
    rtol, atol = tolerances(dtype)
    assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
    assert got.shape == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@GRID
def test_sparse_grid(rng, c, dtype, from_logits, smoothing):
    z = make_preds(rng, (37, c), dtype, from_logits)
    y = rng.integers(0, c, 37)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits, label_smoothing=smoothing)
    want, _ = reference.sparse_categorical_crossentropy(
        y, z, from_logits, label_smoothing=smoothing, dtype=dtype
    )
    check(got, want, dtype)


@GRID
def test_dense_grid_soft_targets(rng, c, dtype, from_logits, smoothing):
    z = make_preds(rng, (29, c), dtype, from_logits)
    t = soft_targets(rng, (29, c)).astype(dtype)
    got = xent.categorical_crossentropy(t, z, from_logits, label_smoothing=smoothing)
    want = reference.categorical_crossentropy(t, z, from_logits, smoothing, dtype=dtype)
    check(got, want, dtype)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c", [1, 17, 1000])
def test_sparse_renormalize_false(rng, c, dtype, from_logits):
    p = make_preds(rng, (41, c), dtype, False) * 0.7  # rows sum to 0.7: the flag matters
    y = rng.integers(0, c, 41)
    for smoothing in (0.0, 0.2):
        got = xent.sparse_categorical_crossentropy(
            y, p, label_smoothing=smoothing, renormalize=False
        )
        want, _ = reference.sparse_categorical_crossentropy(
            y, p, label_smoothing=smoothing, renormalize=False, dtype=dtype
        )
        check(got, want, dtype)
        dense = xent.categorical_crossentropy(
            np.eye(c)[y], p, label_smoothing=smoothing, renormalize=False
        )
        check(dense, want, dtype)


@pytest.mark.parametrize(
    "label_dtype",
    [
        np.uint8,
        np.int8,
        np.int16,
        np.uint16,
        np.int32,
        np.uint32,
        np.int64,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    ],
)
def test_label_dtypes(rng, label_dtype):
    z = rng.standard_normal((50, 100))
    y = rng.integers(0, 100, 50)
    got = xent.sparse_categorical_crossentropy(y.astype(label_dtype), z, from_logits=True)
    want, _ = reference.sparse_categorical_crossentropy(y, z, True)
    check(got, want, np.float64)


def test_large_labels_are_not_rounded_through_floats(rng):
    # Keras casts labels to the prediction dtype: label 2049 becomes 2048 in float16.
    z = rng.standard_normal((2, 4000)).astype(np.float16)
    y = np.array([2049, 3999], dtype=np.int32)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    want, _ = reference.sparse_categorical_crossentropy(y, z.astype(np.float32), True)
    check(got, want, np.float32)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_any_class_axis(rng, axis, from_logits):
    shape = (5, 6, 7)
    z = make_preds(rng, shape, np.float64, from_logits, axis=axis)
    labels_shape = tuple(s for i, s in enumerate(shape) if i != axis % 3)
    c = shape[axis]
    y = rng.integers(0, c, labels_shape)
    for smoothing in (0.0, 0.3):
        got = xent.sparse_categorical_crossentropy(
            y, z, from_logits, axis=axis, label_smoothing=smoothing
        )
        want, _ = reference.sparse_categorical_crossentropy(
            y, z, from_logits, axis=axis, label_smoothing=smoothing
        )
        check(got, want, np.float64)
        t = soft_targets(rng, shape, axis=axis)
        got = xent.categorical_crossentropy(t, z, from_logits, smoothing, axis=axis)
        # smoothing uses C of the class axis actually used (Keras <= 3.15 used shape[-1])
        want = reference.categorical_crossentropy(t, z, from_logits, smoothing, axis=axis)
        check(got, want, np.float64)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_the_same_answer(rng, dtype, from_logits):
    z = make_preds(rng, (33, 20), dtype, from_logits)
    t = soft_targets(rng, (33, 20))
    y = rng.integers(0, 20, 33)
    want_s, _ = reference.sparse_categorical_crossentropy(y, z, from_logits, dtype=dtype)
    want_d = reference.categorical_crossentropy(t, z, from_logits, dtype=dtype)
    for zz in layouts(z).values():
        got = xent.sparse_categorical_crossentropy(y, zz, from_logits)
        check(got, want_s, dtype)
        for tt in layouts(t).values():
            got = xent.categorical_crossentropy(tt, zz, from_logits)
            check(got, want_d, dtype)


@pytest.mark.parametrize("from_logits", [True, False])
def test_ignore_class_with_smoothing_and_weights(rng, from_logits):
    z = make_preds(rng, (8, 9, 11), np.float64, from_logits)
    y = rng.integers(0, 11, (8, 9))
    y[rng.random((8, 9)) < 0.3] = 255
    w = rng.random((8, 9))
    per, valid = reference.sparse_categorical_crossentropy(
        y, z, from_logits, ignore_class=255, label_smoothing=0.15
    )
    got = xent.sparse_categorical_crossentropy(
        y, z, from_logits, ignore_class=255, label_smoothing=0.15
    )
    check(got, per, np.float64)
    for reduction in ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"]:
        loss = xent.SparseCategoricalCrossentropy(
            from_logits, ignore_class=255, label_smoothing=0.15, reduction=reduction
        )
        np.testing.assert_allclose(
            loss(y, z, sample_weight=w),
            reference.keras_reduce(per, w, valid, reduction),
            rtol=1e-12,
        )


def test_float16_is_computed_in_float32(rng):
    z = rng.standard_normal((20, 30)).astype(np.float16)
    y = rng.integers(0, 30, 20)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    want, _ = reference.sparse_categorical_crossentropy(y, z.astype(np.float32), True)
    check(got, want, np.float32)


def test_one_dimensional_prediction_and_scalar_label():
    got = xent.sparse_categorical_crossentropy(2, [1.0, 2.0, 3.0], from_logits=True)
    assert got.shape == ()
    np.testing.assert_allclose(
        got,
        reference.sparse_categorical_crossentropy([2], [[1.0, 2.0, 3.0]], True)[0][0],
        rtol=1e-12,
    )


def test_trailing_unit_label_axis_is_squeezed(rng):
    z = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, (6, 1))
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    assert got.shape == (6,)
    check(got, reference.sparse_categorical_crossentropy(y[:, 0], z, True)[0], np.float64)


def test_lists_tuples_and_array_likes():
    class ArrayLike:
        def __init__(self, a):
            self.a = np.asarray(a)

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    p = ArrayLike([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    got = xent.sparse_categorical_crossentropy((1, 2), p)
    np.testing.assert_allclose(got, [0.0512933, 2.3025851], rtol=1e-6)
