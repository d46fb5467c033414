"""Hypothesis properties: sparse == dense on one-hot targets, row order, thread count."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import xent

import reference
from helpers import per_thread_count, tolerances


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n = draw(st.integers(0, 40))
    c = draw(st.integers(1, 300))
    from_logits = draw(st.booleans())
    if from_logits:
        elements = st.floats(-50, 50, width=32)
    else:
        elements = st.floats(0, 1, width=32)
    z = draw(hnp.arrays(dtype, (n, c), elements=elements))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    smoothing = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    return z, y, from_logits, smoothing


@given(problems())
def test_sparse_equals_dense_on_one_hot(problem):
    z, y, from_logits, smoothing = problem
    if not from_logits and z.shape[0] and np.any(z.sum(axis=1) == 0):
        z = z + np.asarray(1e-3, z.dtype)  # keep rows summable (0/0 is NaN in both)
    onehot = np.zeros(z.shape, np.float32)
    onehot[np.arange(len(y)), y] = 1
    sparse = xent.sparse_categorical_crossentropy(y, z, from_logits, label_smoothing=smoothing)
    dense = xent.categorical_crossentropy(onehot, z, from_logits, label_smoothing=smoothing)
    rtol, atol = tolerances(z.dtype)
    np.testing.assert_allclose(sparse, dense, rtol=rtol, atol=atol)
    want, _ = reference.sparse_categorical_crossentropy(
        y, z, from_logits, label_smoothing=smoothing, dtype=z.dtype
    )
    np.testing.assert_allclose(sparse, want, rtol=rtol, atol=atol)


@given(problems(), st.randoms(use_true_random=False))
def test_row_order_invariance(problem, random):
    z, y, from_logits, smoothing = problem
    perm = np.array(random.sample(range(len(y)), len(y)), dtype=np.int64)
    a = xent.sparse_categorical_crossentropy(y, z, from_logits, label_smoothing=smoothing)
    b = xent.sparse_categorical_crossentropy(
        y[perm], z[perm], from_logits, label_smoothing=smoothing
    )
    np.testing.assert_array_equal(a[perm], b)  # per row: bit-identical
    loss = xent.SparseCategoricalCrossentropy(
        from_logits, label_smoothing=smoothing, reduction="sum"
    )
    rtol, _ = tolerances(z.dtype)
    np.testing.assert_allclose(loss(y, z), loss(y[perm], z[perm]), rtol=rtol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_thread_count_invariance(dtype):
    rng = np.random.default_rng(7)
    z = rng.standard_normal((3001, 257)).astype(dtype)
    t = rng.random((3001, 257)).astype(dtype)
    y = rng.integers(0, 257, 3001)
    p = np.abs(z) + dtype(0.01)
    results = per_thread_count(
        lambda: [
            xent.SparseCategoricalCrossentropy(True, label_smoothing=0.1)(y, z),
            xent.CategoricalCrossentropy(True)(t, z),
            xent.SparseCategoricalCrossentropy()(y, p),
            xent.CategoricalCrossentropy(label_smoothing=0.2)(t, p),
            xent.sparse_categorical_crossentropy(y, z, True),
        ]
    )
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)  # bit-identical
