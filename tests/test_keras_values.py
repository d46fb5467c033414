"""Keras's published values, the reductions, ignore_class and sample weights."""

import numpy as np
import pytest

import xent

import reference

Y_PRED = [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]
ONE_HOT = [[0, 1, 0], [0, 0, 1]]
LABELS = [1, 2]


def both_losses(dtype, **kw):
    """(name, per-sample result) for the sparse and the dense loss on the Keras example."""
    p = np.asarray(Y_PRED, dtype)
    return [
        ("sparse", xent.sparse_categorical_crossentropy(LABELS, p, **kw)),
        ("dense", xent.categorical_crossentropy(ONE_HOT, p, **kw)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_published_per_sample(dtype):
    # the published values carry 8 digits: rtol 1e-6 is what they can resolve
    for name, got in both_losses(dtype):
        assert got.dtype == dtype, name
        np.testing.assert_allclose(got, [0.0512933, 2.3025851], rtol=1e-6, err_msg=name)


def test_float64_example_to_full_precision():
    # the same example in closed form: -log(0.95) and -log(0.1), within 1e-12
    for name, got in both_losses(np.float64):
        np.testing.assert_allclose(got, [-np.log(0.95), -np.log(0.1)], rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_published_label_smoothing(dtype):
    for name, got in both_losses(dtype, label_smoothing=0.1):
        np.testing.assert_allclose(got, [0.6850014, 2.2332704], rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "reduction, sample_weight, expected",
    [
        ("sum_over_batch_size", None, 1.1769392),
        ("mean", None, 1.1769392),
        ("sum", None, 2.3538785),
        ("sum_over_batch_size", [0.3, 0.7], 0.8135988),
        ("mean_with_sample_weight", [0.3, 0.7], 1.6271976),
    ],
)
def test_published_reductions(dtype, reduction, sample_weight, expected):
    p = np.asarray(Y_PRED, dtype)
    sparse = xent.SparseCategoricalCrossentropy(reduction=reduction)
    dense = xent.CategoricalCrossentropy(reduction=reduction)
    for got in (
        sparse(LABELS, p, sample_weight=sample_weight),
        dense(ONE_HOT, p, sample_weight=sample_weight),
    ):
        assert np.shape(got) == () and got.dtype == dtype
        np.testing.assert_allclose(float(got), expected, rtol=1e-6)


@pytest.mark.parametrize("reduction", ["none", None])
def test_reduction_none_returns_weighted_per_sample(reduction):
    loss = xent.SparseCategoricalCrossentropy(reduction=reduction)
    got = loss(LABELS, Y_PRED, sample_weight=[2.0, 0.5])
    np.testing.assert_allclose(got, [2 * 0.0512933, 0.5 * 2.3025851], rtol=1e-6)


def test_published_ignore_class():
    p = np.repeat(np.asarray(Y_PRED), 2, axis=0)  # rows r0, r0, r1, r1
    labels = [1, -1, 2, -1]
    per_sample = xent.sparse_categorical_crossentropy(labels, p, ignore_class=-1)
    np.testing.assert_allclose(per_sample, [0.0512933, 0, 2.3025851, 0], rtol=1e-6, atol=0)
    loss = xent.SparseCategoricalCrossentropy(ignore_class=-1)
    np.testing.assert_allclose(float(loss(labels, p)), 1.1769392, rtol=1e-6)


def test_ignore_class_can_be_a_valid_class():
    got = xent.sparse_categorical_crossentropy(LABELS, Y_PRED, ignore_class=1)
    np.testing.assert_allclose(got, [0.0, 2.3025851], rtol=1e-6)


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "sum"])
def test_all_ignored_batch_reduces_to_zero(reduction):
    loss = xent.SparseCategoricalCrossentropy(ignore_class=5, reduction=reduction)
    assert float(loss([5, 5], Y_PRED)) == 0.0


@pytest.mark.parametrize("cls", [xent.SparseCategoricalCrossentropy, xent.CategoricalCrossentropy])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight"])
def test_empty_batch_reduces_to_zero(cls, reduction):
    y_true = (
        np.zeros((0,), np.int64) if cls is xent.SparseCategoricalCrossentropy else np.zeros((0, 3))
    )
    assert float(cls(reduction=reduction)(y_true, np.zeros((0, 3)))) == 0.0
    assert cls(reduction="none")(y_true, np.zeros((0, 3))).shape == (0,)


def test_weighted_reductions_with_ignore_and_ranked_weights(rng):
    z = rng.standard_normal((6, 4, 5))
    labels = rng.integers(0, 5, (6, 4))
    labels[0, 1] = labels[3, 2] = 7
    w = rng.uniform(0.1, 2.0, 6)  # one dimension fewer: broadcast over the last axis
    per, valid = reference.sparse_categorical_crossentropy(labels, z, True, ignore_class=7)
    for reduction in ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"]:
        loss = xent.SparseCategoricalCrossentropy(True, ignore_class=7, reduction=reduction)
        want = reference.keras_reduce(per, w, valid, reduction)
        np.testing.assert_allclose(loss(labels, z, sample_weight=w), want, rtol=1e-12)


def test_invalid_reduction_lists_allowed_ones():
    with pytest.raises(
        ValueError, match="reduction='average'.*'sum_over_batch_size'.*'mean_with_sample_weight'"
    ):
        xent.SparseCategoricalCrossentropy(reduction="average")
    with pytest.raises(ValueError, match="reduction='avg'"):
        xent.CategoricalCrossentropy(reduction="avg")


def test_loss_object_config_and_call():
    loss = xent.SparseCategoricalCrossentropy(from_logits=True, ignore_class=3, label_smoothing=0.2)
    cfg = loss.get_config()
    assert cfg["from_logits"] is True and cfg["ignore_class"] == 3 and cfg["label_smoothing"] == 0.2
    z = np.array([[1.0, 2.0, 3.0, 4.0]])
    want, _ = reference.sparse_categorical_crossentropy([2], z, True, 3, -1, 0.2)
    np.testing.assert_allclose(loss.call([2], z), want, rtol=1e-12)


def test_labels_with_a_singleton_class_axis_are_squeezed_there():
    """Keras 3: sparse labels of the predictions' rank with size 1 at ``axis`` are squeezed
    at that axis (its losses test: y_true (2, 1, 4, 4), y_pred (2, 2, 4, 4), axis=1)."""
    rng = np.random.default_rng(0)
    p = rng.random((2, 2, 4, 4))
    y = rng.integers(0, 2, (2, 1, 4, 4))
    out = xent.sparse_categorical_crossentropy(y, p, axis=1)
    assert out.shape == (2, 4, 4)
    np.testing.assert_array_equal(out, xent.sparse_categorical_crossentropy(y[:, 0], p, axis=1))
    loss = xent.SparseCategoricalCrossentropy(axis=1, reduction="none")
    np.testing.assert_array_equal(loss(y, p), out)
    with pytest.raises(ValueError, match=r"y_true has shape \(2, 2, 4, 4\)"):
        xent.sparse_categorical_crossentropy(np.zeros((2, 2, 4, 4), int), p, axis=1)
