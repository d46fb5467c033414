"""Hostile and unusual input on every public entry point (hypothesis).

Each call either returns the float64 reference result or raises the documented
ValueError/TypeError; never another exception, a crash, a wrong number or a modified input.
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import xent

import reference

FLOAT_KINDS = ["float16", "float32", "float64", ">f4", "<f8"]
BAD_PRED = ["int32", "uint8", "bool", "complex64", "object"]
INT_LABELS = ["int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", ">i4"]
BAD_LABELS = ["bool", "complex128", "object", "U1"]
SPECIAL_LOGITS = [np.nan, np.inf, -np.inf, 1e38, -1e38, 1e-45, -1e-45, 0.0]
SPECIAL_PROBS = [np.nan, 0.0, 1.0, 1e-45, 1e-40, 0.5]


LAYOUTS = ["C", "F", "reversed", "broadcast", "readonly", "strided"]


def layout(draw, a, kind=None):
    """The same values in a drawn memory layout (or in ``kind``; values unchanged)."""
    kind = kind or draw(st.sampled_from(LAYOUTS))
    if kind == "F":
        return np.asfortranarray(a)
    if kind == "reversed" and a.ndim:
        return np.ascontiguousarray(a[::-1])[::-1]
    if kind == "broadcast" and a.ndim and a.shape[0] > 0:
        first = a[:1]
        if np.array_equal(np.broadcast_to(first, a.shape), a, equal_nan=a.dtype.kind in "fc"):
            return np.broadcast_to(first, a.shape)  # zero stride, read-only
        return a
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "strided" and a.ndim:
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    return a


@st.composite
def cases(draw):
    n = draw(st.integers(0, 6))
    c = draw(st.one_of(st.integers(1, 9), st.just(70_000) if n <= 2 else st.integers(1, 9)))
    from_logits = draw(st.booleans())
    if from_logits:
        elems = st.one_of(st.floats(-60, 60), st.sampled_from(SPECIAL_LOGITS))
    else:
        elems = st.one_of(st.floats(0, 1), st.sampled_from(SPECIAL_PROBS))
    flat = draw(st.lists(elems, min_size=min(n * c, 20), max_size=min(n * c, 20)))
    values = np.resize(np.array(flat or [0.5]), (n, c)).astype(np.float64)
    broadcast_rows = draw(st.booleans())
    if broadcast_rows and n:
        values[:] = values[:1]
    # valid kinds drawn more often, so most examples reach the kernels
    pred_dtype = draw(st.sampled_from(FLOAT_KINDS * 3 + BAD_PRED))
    label_dtype = draw(st.sampled_from((INT_LABELS + ["float32", "float64"]) * 3 + BAD_LABELS))
    label_values = st.one_of(
        st.integers(0, c - 1), st.sampled_from([-1, c, 2**31, 2**63 - 1, 2**64 - 1])
    )
    labels = draw(st.lists(label_values, min_size=n, max_size=n))
    if draw(st.booleans()) and n:
        labels = [labels[0]] * n
    ignore = draw(st.sampled_from([None, -1, 0]))
    smoothing = draw(st.sampled_from([0.0, 0.25]))
    return dict(
        values=values,
        pred_dtype=pred_dtype,
        label_dtype=label_dtype,
        labels=labels,
        from_logits=from_logits,
        ignore=ignore,
        smoothing=smoothing,
        c=c,
        layout_seed=draw(st.integers(0, 10**6)),
    )


def make_array(values, dtype):
    """``values`` as ``dtype``; None when NumPy itself cannot represent them (skipped)."""
    try:
        with np.errstate(all="ignore"):
            if dtype == "object":
                return values.astype(object)
            return np.array(values, dtype=np.dtype(dtype))
    except (OverflowError, ValueError, TypeError):
        return None


def assert_unchanged(a, before):
    if a.dtype == object:
        assert all(x is y or (x != x and y != y) for x, y in zip(a.ravel(), before.ravel()))
    else:
        assert a.tobytes() == before.tobytes()


def expected_error(case, pred, labels):
    if pred.dtype.kind != "f":
        return TypeError
    if labels.dtype.kind not in "iuf":
        return TypeError
    lab = np.asarray(case["labels"], dtype=object)
    ignore = case["ignore"]
    bad = [v for v in lab if (ignore is None or v != ignore) and not 0 <= v < case["c"]]
    return ValueError if bad else None


def in_result_dtype(want, dtype):
    """The float64 reference rounded to the result dtype: a loss above float32's largest
    value (logits near 1e38 weighted by several targets) is inf in float32."""
    with np.errstate(over="ignore"):
        return np.asarray(want).astype(dtype)


# three times the profile's examples: this is the widest net in the suite
MANY = settings.default.max_examples * 3


@settings(
    max_examples=MANY, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(cases(), st.data())
def test_sparse_entry_points(case, data):
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
        event("labels do not fit the drawn dtype")
        return
    pred = layout(data.draw, pred)
    labels = layout(data.draw, labels)
    before = (pred.copy(), labels.copy())
    err = expected_error(case, pred, labels)
    calls = [
        lambda: xent.sparse_categorical_crossentropy(
            labels, pred, case["from_logits"], case["ignore"], label_smoothing=case["smoothing"]
        ),
        lambda: xent.SparseCategoricalCrossentropy(
            case["from_logits"], case["ignore"], label_smoothing=case["smoothing"], reduction="sum"
        )(labels, pred),
    ]
    event(f"sparse: {'raises ' + err.__name__ if err else 'compared with the reference'}")
    for call in calls:
        if err is not None:
            with pytest.raises(err):
                call()
            continue
        got = call()
        if np.ndim(got) == 1:
            comp = np.float64 if pred.dtype == np.float64 else np.float32
            want, valid = reference.sparse_categorical_crossentropy(
                labels.astype(np.int64),
                pred.astype(comp),
                case["from_logits"],
                case["ignore"],
                label_smoothing=case["smoothing"],
                dtype=comp,
            )
            rtol = 1e-12 if comp == np.float64 else 2e-5
            want = in_result_dtype(want, comp)
            np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)
    assert_unchanged(pred, before[0])
    assert_unchanged(labels, before[1])


@settings(max_examples=MANY, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.data())
def test_dense_entry_points(case, data):
    pred = make_array(case["values"], case["pred_dtype"])
    if pred is None:
        return
    target_dtype = data.draw(
        st.sampled_from(["float32", "float64", "uint8", "bool", "int64", "complex64", "object"])
    )
    rng = np.random.default_rng(case["layout_seed"])
    t = (
        rng.integers(0, 2, pred.shape)
        if target_dtype in ("uint8", "bool", "int64")
        else rng.random(pred.shape)
    )
    t = make_array(t, target_dtype)
    # one layout for both arrays: each pair of layouts is a kernel compiled for this test alone
    # (minutes of the CI run); every pair is checked in test_grid's layout test
    kind = data.draw(st.sampled_from(LAYOUTS))
    pred = layout(data.draw, pred, kind)
    t = layout(data.draw, t, kind)
    before = (pred.copy(), t.copy())
    call = lambda: xent.categorical_crossentropy(  # noqa: E731
        t, pred, case["from_logits"], label_smoothing=case["smoothing"]
    )
    ok = pred.dtype.kind == "f" and t.dtype.kind in "biuf"
    event(f"dense: {'compared with the reference' if ok else 'raises TypeError'}")
    if not ok:
        with pytest.raises(TypeError):
            call()
    else:
        got = call()
        comp = np.float64 if pred.dtype == np.float64 else np.float32
        want = reference.categorical_crossentropy(
            t.astype(np.float64),
            pred.astype(comp),
            case["from_logits"],
            case["smoothing"],
            dtype=comp,
        )
        rtol = 1e-12 if comp == np.float64 else 2e-5
        want = in_result_dtype(want, comp)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol, equal_nan=True)
        total = xent.CategoricalCrossentropy(
            case["from_logits"], case["smoothing"], reduction="sum"
        )(t, pred)
        assert np.isnan(total) == bool(np.isnan(want).any()) or np.isinf(want).any()
    assert_unchanged(pred, before[0])
    assert_unchanged(t, before[1])
