"""Bad input gets a TypeError/ValueError naming the argument, the value and its place."""

import numpy as np
import pytest

import xent
from xent.kernels import IGNORED

P = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])


@pytest.mark.parametrize(
    "labels, match",
    [
        (
            [1, 3],
            r"y_true has the out-of-range label 3 at index 1; labels must be integers in \[0, 3\)",
        ),
        ([-1, 0], r"out-of-range label -1 at index 0"),
        ([1.0, 1.5], r"non-integral label 1.5 at index 1"),
        ([np.nan, 1.0], r"non-finite label nan at index 0"),
        ([np.inf, 1.0], r"non-finite label inf at index 0"),
        (np.array([1, 2**31], np.int64), r"out-of-range label 2147483648 at index 1"),
        (np.array([1, 2**63 - 1], np.int64), r"out-of-range label 9223372036854775807"),
        (np.array([1, 2**64 - 1], np.uint64), r"out-of-range label 18446744073709551615"),
    ],
)
def test_bad_labels_name_value_and_position(labels, match):
    with pytest.raises(ValueError, match=match):
        xent.sparse_categorical_crossentropy(labels, P)


def test_bad_label_position_in_higher_rank():
    y = np.zeros((2, 3), np.int64)
    y[1, 2] = 9
    with pytest.raises(ValueError, match=r"label 9 at index \(1, 2\)"):
        xent.sparse_categorical_crossentropy(y, np.ones((2, 3, 4)) / 4)


def test_ignored_label_does_not_trigger_range_error():
    got = xent.sparse_categorical_crossentropy([1, 99], P, ignore_class=99)
    np.testing.assert_allclose(got, [0.0512933, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="or ignore_class=99"):
        xent.sparse_categorical_crossentropy([5, 99], P, ignore_class=99)


@pytest.mark.parametrize(
    "labels",
    [
        np.array([True, False]),
        np.array([1, 2], dtype=object),
        np.array([1 + 0j, 2]),
        np.array(["a", "b"]),
    ],
)
def test_label_types_rejected(labels):
    with pytest.raises(TypeError, match="y_true must hold integer class labels"):
        xent.sparse_categorical_crossentropy(labels, P)


@pytest.mark.parametrize(
    "pred",
    [
        np.array([[1, 2], [3, 4]]),
        np.array([[True, False]]),
        np.array([[1 + 1j, 1]]),
        np.array([[0.5, 0.5]], dtype=object),
    ],
)
def test_prediction_types_rejected(pred):
    with pytest.raises(TypeError, match="y_pred must hold floating-point scores"):
        xent.sparse_categorical_crossentropy([0] * len(pred), pred)
    with pytest.raises(TypeError, match="y_pred must hold floating-point scores"):
        xent.categorical_crossentropy(np.zeros(pred.shape), pred)


def test_shape_mismatch_shows_both_shapes_and_axis():
    with pytest.raises(ValueError, match=r"y_true has shape \(3,\).*axis=-1.*shape \(2,\)"):
        xent.sparse_categorical_crossentropy([1, 2, 0], P)
    with pytest.raises(
        ValueError,
        match=r"y_true and y_pred must have the same shape\. Received: y_true\.shape=\(2, 4\), "
        r"y_pred\.shape=\(2, 3\)",
    ):
        xent.categorical_crossentropy(np.zeros((2, 4)), P)
    with pytest.raises(ValueError, match=r"y_true has shape \(2,\).*axis=0.*shape \(3,\)"):
        xent.sparse_categorical_crossentropy([1, 0], P, axis=0)


@pytest.mark.parametrize("ls", [-0.1, 1.5, float("nan"), float("inf")])
def test_label_smoothing_out_of_range(ls):
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got"):
        xent.sparse_categorical_crossentropy([1, 2], P, label_smoothing=ls)
    with pytest.raises(ValueError, match="label_smoothing"):
        xent.CategoricalCrossentropy(label_smoothing=ls)


def test_bad_options():
    with pytest.raises(ValueError, match=r"axis=2 is out of range for y_pred with 2"):
        xent.sparse_categorical_crossentropy([1, 2], P, axis=2)
    with pytest.raises(TypeError, match="axis must be an integer"):
        xent.categorical_crossentropy(P, P, axis=1.0)
    with pytest.raises(ValueError, match=r"epsilon must be in \[0, 0.5\)"):
        xent.sparse_categorical_crossentropy([1, 2], P, epsilon=0.7)
    with pytest.raises(TypeError, match="ignore_class must be None or an integer"):
        xent.sparse_categorical_crossentropy([1, 2], P, ignore_class=1.5)
    with pytest.raises(ValueError, match="class axis of y_pred"):
        xent.sparse_categorical_crossentropy([], np.zeros((0, 0)))
    with pytest.raises(ValueError, match="at least one dimension"):
        xent.sparse_categorical_crossentropy(0, 1.0)


def test_sample_weight_errors():
    loss = xent.SparseCategoricalCrossentropy()
    with pytest.raises(ValueError, match=r"sample_weight has shape \(3,\).*\(2,\)"):
        loss([1, 2], P, sample_weight=[1, 2, 3])
    with pytest.raises(TypeError, match="sample_weight must be numeric"):
        loss([1, 2], P, sample_weight=np.array(["a", "b"]))


def test_dense_target_types_rejected():
    with pytest.raises(TypeError, match="y_true must hold numeric targets"):
        xent.categorical_crossentropy(np.array([["a"] * 3] * 2), P)


def test_inputs_are_never_modified(rng):
    z = rng.standard_normal((10, 5))
    z[0, 0] = -np.inf
    t = rng.random((10, 5))
    y = rng.integers(0, 5, 10).astype(np.int8)
    y[3] = 100
    w = rng.random(10)
    copies = [a.copy() for a in (z, t, y, w)]
    p = np.abs(z[:, ::-1]) + 0.1
    p_copy = p.copy()
    for from_logits, pred in ((True, z), (False, p)):
        xent.SparseCategoricalCrossentropy(from_logits, ignore_class=100, label_smoothing=0.1)(
            y, pred, sample_weight=w
        )
        xent.CategoricalCrossentropy(from_logits, label_smoothing=0.1)(t, pred, sample_weight=w)
    for a, b in zip((z, t, y, w), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(p, p_copy)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_ignored_unsigned_labels_are_not_wrapped(dtype):
    """Regression: with unsigned labels, ``np.where(ignored, -1, labels)`` wrapped -1 to the
    dtype's maximum (255 for uint8), which is a valid class when C > 255: ignored rows then
    silently got that class's loss.  Found by tests/test_hostile_frontends.py."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4, 300))
    y = np.array([0, 5, 0, 7], dtype=dtype)
    got = xent.sparse_categorical_crossentropy(y, z, from_logits=True, ignore_class=0)
    assert got[0] == 0.0 and got[2] == 0.0 and got[1] > 0 and got[3] > 0
    got = xent.cross_entropy(
        z, y.astype(np.int64) if dtype == np.uint64 else y, ignore_index=0, reduction="none"
    )
    assert got[0] == 0.0 and got[2] == 0.0
    ev = xent.evaluate(y, z, from_logits=True, ignore_class=0)
    assert ev.count == 2


# Shapes that reach every sparse kernel family: short rows (turned blocks), per-row, probabilities.
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
@pytest.mark.parametrize(
    "shape, from_logits, smoothing",
    [((700, 10), True, 0.0), ((300, 200), True, 0.1), ((300, 200), False, 0.0)],
)
def test_narrow_labels_are_read_as_they_are(dtype, shape, from_logits, smoothing):
    """uint8/int16/int32 labels reach the kernels without an int64 copy and give the
    reference losses (the float64 formulas, from int64 labels)."""
    from xent._inputs import NATIVE_LABEL_DTYPES, as_labels

    from reference import sparse_categorical_crossentropy as ref_sparse

    rng = np.random.default_rng(5)
    n, c = shape
    z = rng.standard_normal(shape).astype(np.float32)
    if not from_logits:
        z = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, c, n).astype(dtype)
    labels, valid = as_labels(y, (n,), c, axis=-1, native=True)
    assert np.dtype(dtype) in NATIVE_LABEL_DTYPES and labels.dtype == dtype and valid is None
    assert labels.base is y or labels is y  # no copy
    got = xent.sparse_categorical_crossentropy(
        y, z, from_logits=from_logits, label_smoothing=smoothing
    )
    want, _ = ref_sparse(
        y.astype(np.int64), z.astype(np.float64), from_logits, label_smoothing=smoothing
    )
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    y_before = y.copy()
    assert np.array_equal(
        got,
        xent.sparse_categorical_crossentropy(
            y.astype(np.int64), z, from_logits=from_logits, label_smoothing=smoothing
        ),
    )
    np.testing.assert_array_equal(y, y_before)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32])
def test_narrow_labels_out_of_range_are_named(dtype):
    z = np.zeros((3, 10), np.float32)
    y = np.array([1, 200, 3], dtype)
    with pytest.raises(ValueError, match=r"out-of-range label 200 at index 1"):
        xent.sparse_categorical_crossentropy(y, z, from_logits=True)
    if np.iinfo(dtype).min < 0:
        with pytest.raises(ValueError, match=r"out-of-range label -3 at index 2"):
            xent.sparse_categorical_crossentropy(np.array([1, 2, -3], dtype), z)


def test_an_ignore_value_nothing_matches_costs_no_copy():
    """PyTorch's ignore_index=-100 is on by default; when no label equals it, the labels go
    to the kernel as they are (no masked copies) and every row counts, with the same losses
    as when some rows are ignored (those rows give 0 and leave the mean's divisor)."""
    from xent._inputs import as_labels

    rng = np.random.default_rng(3)
    z = rng.standard_normal((500, 10)).astype(np.float32)
    y = rng.integers(0, 10, 500)
    labels, valid = as_labels(y, (500,), 10, axis=-1, ignore_class=-100)
    assert valid is None and (labels is y or labels.base is y)  # no copy
    some = y.copy()
    some[[3, 99]] = -100
    labels, valid = as_labels(some, (500,), 10, axis=-1, ignore_class=-100)
    assert labels[3] == labels[99] == IGNORED and valid.sum() == 498
    all_rows = xent.cross_entropy(z, y, reduction="none")
    fewer = xent.cross_entropy(z, some, reduction="none")
    np.testing.assert_array_equal(fewer[valid], all_rows[valid])
    assert fewer[3] == fewer[99] == 0.0
    assert xent.cross_entropy(z, some) == pytest.approx(float(all_rows[valid].mean()), rel=1e-6)
    assert xent.cross_entropy(z, y) == pytest.approx(float(all_rows.mean()), rel=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.int64])
def test_long_labels_out_of_range_are_named(dtype):
    """Labels long enough for the one-pass range check: a bad label first, in the middle or
    last is found and named with its position; valid labels at both ends of the range pass."""
    n = 200_003
    z = np.zeros((n, 10), np.float32)
    y = (np.arange(n) % 10).astype(dtype)
    assert np.isfinite(xent.sparse_categorical_crossentropy(y, z, from_logits=True)).all()
    for at in (0, n // 2, n - 1):
        bad = y.copy()
        bad[at] = 10
        with pytest.raises(ValueError, match=rf"out-of-range label 10 at index {at};"):
            xent.sparse_categorical_crossentropy(bad, z, from_logits=True)
        if np.iinfo(dtype).min < 0:
            bad[at] = -1
            with pytest.raises(ValueError, match=rf"out-of-range label -1 at index {at};"):
                xent.sparse_categorical_crossentropy(bad, z, from_logits=True)


def _deferred_calls():
    """The calls whose label range check comes from the kernel pass (``range_check=False``):
    Keras functions and loss objects, ``cross_entropy`` without class weights."""
    mean = xent.SparseCategoricalCrossentropy(from_logits=True)
    summed = xent.SparseCategoricalCrossentropy(from_logits=True, reduction="sum", ignore_class=7)
    return {
        "keras function": lambda y, z: xent.sparse_categorical_crossentropy(y, z, from_logits=True),
        "keras object": lambda y, z: mean(y, z),
        "keras object, ignore_class=7": lambda y, z: summed(y, z),
        "cross_entropy": lambda y, z: xent.cross_entropy(z, y),
        "cross_entropy none": lambda y, z: xent.cross_entropy(z, y, reduction="none"),
        "cross_entropy, ignore_index=7": lambda y, z: xent.cross_entropy(z, y, ignore_index=7),
    }


@pytest.mark.parametrize("call", list(_deferred_calls()))
@pytest.mark.parametrize("c", [10, 300])  # short rows (kernel counts), wide (engine counts)
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint64])
def test_labels_range_checked_in_the_kernel_pass_are_named(call, c, dtype):
    """Every front end that leaves the range check to the kernel pass still raises the
    ValueError naming the first bad label and its place: a label of C or more, a negative
    one, -1 (the kernels' mark for ignored rows) where no class is ignored or another one
    is; with ignored labels present, and where the bad label comes after ignored ones; and
    uint64 labels that the int64 cast wraps (2**64 - 1 becomes -1)."""
    fn = _deferred_calls()[call]
    n = 3 * 64 + 5
    rng = np.random.default_rng(c)
    z = rng.standard_normal((n, c)).astype(np.float32)
    y = (np.arange(n) % 10).astype(dtype)
    assert np.isfinite(np.asarray(fn(y, z), np.float64)).all()
    ignoring = "7" in call  # labels 7 are ignored in these calls
    bad_values = [c, 2 * c + 3] + ([-1, -5] if np.iinfo(dtype).min < 0 else [])
    if dtype == np.uint64:
        bad_values.append(2**64 - 1)
    for value in bad_values:
        if value > np.iinfo(dtype).max:
            continue
        for at in (0, n // 2, n - 1):
            if ignoring and at == n - 1:
                at = n - 3  # after ignored labels (row n - 4 has label 7)
            bad = y.copy()
            bad[at] = value
            with pytest.raises(ValueError, match=rf"out-of-range label {value} at index {at};"):
                fn(bad, z)


def test_check_counted_labels_rechecks_exactly_when_it_must():
    """The check after a kernel pass reads the labels again (``recheck``) when the kernel
    counted more labels outside the classes than are ignored, or counted nothing; a recheck
    that finds nothing wrong then is an internal error, never a silent pass."""
    from xent._inputs import check_counted_labels

    calls = []

    def recheck():
        calls.append(1)

    two_ignored = np.array([True, False, True, False])
    check_counted_labels(0, None, recheck)
    check_counted_labels(2, two_ignored, recheck)
    assert calls == []
    check_counted_labels(None, None, recheck)  # a kernel that does not count
    assert calls == [1]
    with pytest.raises(AssertionError, match="1 labels outside"):
        check_counted_labels(3, two_ignored, recheck)
    assert calls == [1, 1]
    with pytest.raises(AssertionError):
        check_counted_labels(1, None, recheck)
