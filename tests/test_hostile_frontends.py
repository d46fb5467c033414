"""Hostile input on the PyTorch, optax and evaluation entry points (hypothesis), drawn
like ``test_hostile.py``: each call returns the reference result or raises the documented
ValueError/TypeError, and never modifies its inputs."""

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from test_hostile import assert_unchanged, cases, layout, make_array

import xent

import reference


def _prepare(case, data):
    pred = make_array(case["values"], case["pred_dtype"])
    labels = make_array(np.array(case["labels"], dtype=object), case["label_dtype"])
    if (
        pred is None
        or labels is None
        or (
            labels.dtype.kind in "iu"
            and not np.array_equal(labels.astype(object), np.array(case["labels"], dtype=object))
        )
    ):
        return None, None
    return layout(data.draw, pred), layout(data.draw, labels)


def _bad_labels(case, ignore):
    return [v for v in case["labels"] if (ignore is None or v != ignore) and not 0 <= v < case["c"]]


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases(), __import__("hypothesis").strategies.data())
def test_torch_and_optax_entry_points(case, data):
    pred, labels = _prepare(case, data)
    if pred is None:
        event("labels do not fit the drawn dtype")
        return
    before = (pred.copy(), labels.copy())
    ignore = -100 if case["ignore"] is None else case["ignore"]
    if pred.dtype.kind != "f" or labels.dtype.kind not in "iu":
        err = TypeError if pred.dtype.kind != "f" or labels.dtype.kind != "f" else ValueError
    else:
        err = ValueError if _bad_labels(case, ignore) else None
    event(f"torch: {'raises ' + err.__name__ if err else 'compared'}")
    call = lambda: xent.cross_entropy(
        pred,
        labels,
        ignore_index=ignore,  # noqa: E731
        reduction="none",
        label_smoothing=case["smoothing"],
    )
    grad_call = lambda: xent.value_and_grad(  # noqa: E731
        pred, labels, ignore_index=ignore, reduction="none", label_smoothing=case["smoothing"]
    )
    if err is not None:
        with pytest.raises(err):
            call()
        with pytest.raises(err):
            grad_call()
    else:
        comp = np.float64 if pred.dtype == np.float64 else np.float32
        args = (pred.astype(comp), labels.astype(np.int64), None, ignore, "none")
        want = reference.torch_cross_entropy(*args, case["smoothing"])
        rtol = 1e-12 if comp == np.float64 else 2e-5
        np.testing.assert_allclose(call(), want, rtol=rtol, atol=rtol, equal_nan=True)
        loss, grad = grad_call()
        np.testing.assert_allclose(loss, want, rtol=rtol, atol=rtol, equal_nan=True)
        want_grad = reference.torch_cross_entropy_grad(*args, case["smoothing"])
        # the input's dtype in native byte order (16-bit gradients are rounded to 16 bits)
        assert grad.dtype == pred.dtype.newbyteorder("=")
        g_tol = 2.0**-10 if pred.dtype == np.float16 else rtol
        np.testing.assert_allclose(grad, want_grad, rtol=g_tol, atol=g_tol, equal_nan=True)
    # optax: integers only, no ignore value
    if pred.dtype.kind != "f" or labels.dtype.kind not in "iu":
        with pytest.raises(TypeError):
            xent.softmax_cross_entropy_with_integer_labels(pred, labels)
    elif _bad_labels(case, None):
        with pytest.raises(ValueError):
            xent.softmax_cross_entropy_with_integer_labels(pred, labels)
    else:
        comp = np.float64 if pred.dtype == np.float64 else np.float32
        got = xent.softmax_cross_entropy_with_integer_labels(pred, labels)
        want = reference.optax_integer_labels(pred.astype(comp), labels.astype(np.int64))
        rtol = 1e-12 if comp == np.float64 else 2e-5
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)
    assert_unchanged(pred, before[0])
    assert_unchanged(labels, before[1])


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cases(), __import__("hypothesis").strategies.data())
def test_evaluate_entry_point(case, data):
    pred, labels = _prepare(case, data)
    if pred is None:
        event("labels do not fit the drawn dtype")
        return
    before = (pred.copy(), labels.copy())
    if pred.dtype.kind != "f" or labels.dtype.kind not in "iuf":
        err = TypeError
    else:
        err = ValueError if _bad_labels(case, case["ignore"]) else None
    event(f"evaluate: {'raises ' + err.__name__ if err else 'compared'}")
    call = lambda: xent.evaluate(
        labels,
        pred,
        from_logits=case["from_logits"],  # noqa: E731
        top_k=(1, 2),
        ignore_class=case["ignore"],
        batch_size=2,
    )
    if err is not None:
        with pytest.raises(err):
            call()
    else:
        ev = call()
        comp = np.float64 if pred.dtype == np.float64 else np.float32
        want = reference.evaluate(
            labels.astype(np.int64),
            pred.astype(comp),
            case["from_logits"],
            (1, 2),
            None,
            case["ignore"],
            dtype=comp,
        )
        assert ev.count == want["count"]
        rtol = 1e-12 if comp == np.float64 else 2e-5
        np.testing.assert_allclose(ev.loss, want["loss"], rtol=rtol, atol=rtol, equal_nan=True)
        np.testing.assert_allclose(ev.accuracy, want["accuracy"], equal_nan=True)
        np.testing.assert_allclose(ev.top_k_accuracy[2], want["top_k_accuracy"][2], equal_nan=True)
    assert_unchanged(pred, before[0])
    assert_unchanged(labels, before[1])
