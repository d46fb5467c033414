"""scikit-learn front end (``log_loss``) against the reference formula, the Keras
documentation's value, and scikit-learn itself when installed."""

import itertools
import warnings

import numpy as np
import pytest

import xent

import reference as ref


def test_keras_documentation_value():
    got = xent.log_loss([1, 2], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]], labels=[0, 1, 2])
    assert abs(got - 1.176939193690798) < 1e-12
    assert isinstance(got, float)


def _probs(rng, n, c, dtype):
    p = rng.random((n, c)) ** 3
    p /= p.sum(1, keepdims=True)
    return p.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 3, 5, 40])
def test_grid_against_reference(rng, dtype, c):
    n = 50
    p = _probs(rng, n, c, dtype)
    p[0, 0] = 0.0  # exercises the clip at the dtype's epsilon
    y = rng.integers(0, c, n)
    y[:c] = np.arange(c)
    for normalize, weighted in itertools.product([True, False], [False, True]):
        sw = rng.random(n) if weighted else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # float32 rows may miss by ~1e-7
            got = xent.log_loss(y, p, normalize=normalize, sample_weight=sw)
        want = ref.sklearn_log_loss(y, p, normalize, sw)
        np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == np.float32 else 1e-12)
        # a label-indicator y_true gives the same number
        onehot = np.eye(c, dtype=np.int8)[y]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            got2 = xent.log_loss(onehot, p, normalize=normalize, sample_weight=sw)
        np.testing.assert_allclose(got2, want, rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_label_mapping_strings_and_declared_labels(rng):
    p = _probs(rng, 6, 3, np.float64)
    y = np.array(["b", "c", "a", "a", "c", "b"])
    got = xent.log_loss(y, p)
    want = ref.sklearn_log_loss(np.searchsorted(["a", "b", "c"], y), p)
    assert got == pytest.approx(want, rel=1e-12)
    # labels not all present in y_true
    y2 = np.array([10, 10, 30, 30, 10, 30])
    got = xent.log_loss(y2, p, labels=[10, 20, 30])
    want = ref.sklearn_log_loss(np.searchsorted([10, 20, 30], y2), p, labels=[0, 1, 2])
    assert got == pytest.approx(want, rel=1e-12)


def test_binary_positive_class_vector():
    got = xent.log_loss(["spam", "ham", "ham"], [0.9, 0.2, 0.3])
    # "spam" sorts after "ham": it is the positive class, the column given
    want = -(np.log(0.9) + np.log(1 - 0.2) + np.log(1 - 0.3)) / 3
    assert got == pytest.approx(want, rel=1e-12)


def test_no_renormalisation_and_warning():
    p = np.array([[0.2, 0.2], [0.5, 0.5]])
    with pytest.warns(UserWarning, match="do not sum to one.*row 0"):
        got = xent.log_loss([0, 1], p)
    assert got == pytest.approx(-(np.log(0.2) + np.log(0.5)) / 2, rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xent.log_loss([0, 1], [[0.3, 0.7], [0.6, 0.4]])


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0, 1], [[0.5, 1.5], [0.5, 0.5]]), {}, r"found 1.5 at index \(0, 1\)"),
        (([0, 1], [[0.5, 0.5], [-0.1, 1.1]]), {}, r"found -0.1 at index \(1, 0\)"),
        (([0, 1], [[0.5, np.nan], [0.5, 0.5]]), {}, r"nan at index \(0, 1\)"),
        (([0, 1], [0.5, 1.2]), {}, "found 1.2 at index 1"),
        (
            ([0, 3], [[0.5, 0.5], [0.5, 0.5]]),
            {"labels": [0, 1]},
            r"y_true contains values \{3\} not belonging to the passed labels \[0, 1\]\. "
            r"\(The first is 3, at index 1\.\)",
        ),
        (([1, 1], [[0.5, 0.5], [0.5, 0.5]]), {}, "only one label"),
        (([0, 1, 2], [[0.5, 0.5]] * 3), {}, "3 classes but y_proba has 2 columns"),
        (
            ([0, 1], [[0.5, 0.5]] * 3),
            {},
            r"inconsistent numbers of samples: \[3, 2\] \(y_proba has 3 rows, y_true 2\)",
        ),
        (([0, 1], [[0.5, 0.5]] * 2), {"sample_weight": [0, 0]}, "at least one non-zero"),
        (([0, 1], [[0.5, 0.5]] * 2), {"sample_weight": [1]}, r"samples: \[2, 2, 1\]"),
    ],
)
def test_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        xent.log_loss(*args, **kwargs)


def test_y_pred_is_the_deprecated_name_of_y_proba():
    """scikit-learn 1.9 renamed ``y_pred`` to ``y_proba``; ``y_pred=`` warns as it does there."""
    p = [[0.3, 0.7], [0.6, 0.4]]
    want = xent.log_loss([0, 1], p)
    assert xent.log_loss([0, 1], y_proba=p) == want
    with pytest.warns(FutureWarning, match="`y_pred` was renamed to `y_proba` in version 1.9"):
        assert xent.log_loss([0, 1], y_pred=p) == want
    with pytest.raises(ValueError, match="Cannot use both `y_pred` and `y_proba`"):
        xent.log_loss([0, 1], p, y_pred=p)


def test_against_scikit_learn(rng):
    metrics = pytest.importorskip("sklearn.metrics")
    for c, dtype in itertools.product([2, 3, 7], [np.float32, np.float64]):
        p = _probs(rng, 40, c, dtype)
        p[1, 0] = 0.0
        y = rng.integers(0, c, 40)
        y[:c] = np.arange(c)
        sw = rng.random(40)
        for normalize in (True, False):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = metrics.log_loss(y, p, normalize=normalize, sample_weight=sw)
                got = xent.log_loss(y, p, normalize=normalize, sample_weight=sw)
            assert got == pytest.approx(want, rel=1e-6 if dtype == np.float32 else 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert xent.log_loss(["x", "y", "y"], [0.1, 0.6, 0.9]) == pytest.approx(
            metrics.log_loss(["x", "y", "y"], [0.1, 0.6, 0.9]), rel=1e-12
        )
