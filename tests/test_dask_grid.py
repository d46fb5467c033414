"""Dask equals in memory for every front end and option, to 1e-12 relative in float64.

Every driver (in memory: one block; Dask: many blocks) forms a reduction from the same
partials and the same combine, so the two can never disagree; this grid checks it on uneven
chunks (one of a single row) with the synchronous scheduler.  Worker processes are covered by
``test_dask.py``.
"""

import itertools

import numpy as np
import pytest

import xent

pytestmark = pytest.mark.dask

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

N, C = 403, 11
CHUNKS = (101, 1, 200, 101)


@pytest.fixture(scope="module", autouse=True)
def synchronous():
    with dask.config.set(scheduler="synchronous"):
        yield


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(2024)
    z = rng.standard_normal((N, C)) * 3
    y = rng.integers(0, C, N)
    y[::13] = 4  # the class that ignore_class / ignore_index tests drop
    t = rng.random((N, C))
    t /= t.sum(1, keepdims=True)
    return z, y, t, rng.random(N), np.linspace(0.5, 2.0, C)


def lazy(x):
    return da.from_array(x, chunks=(CHUNKS,) + tuple((s,) for s in x.shape[1:]))


def same(got, want):
    assert isinstance(got, da.Array)
    np.testing.assert_allclose(np.asarray(got.compute()), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "weighted,smoothing,ignore,z_loss,softcap",
    list(itertools.product([False, True], [0.0, 0.1], [False, True], [0.0, 0.1], [None, 5.0])),
)
def test_cross_entropy_index_targets(data, reduction, weighted, smoothing, ignore, z_loss, softcap):
    z, y, _, _, cw = data
    y = np.where(y == 4, -100, y) if ignore else y
    kw = dict(
        weight=cw if weighted else None,
        reduction=reduction,
        label_smoothing=smoothing,
        z_loss=z_loss,
        softcap=softcap,
    )
    same(xent.cross_entropy(lazy(z), lazy(y), **kw), xent.cross_entropy(z, y, **kw))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "weighted,smoothing,z_loss", list(itertools.product([False, True], [0.0, 0.2], [0.0, 0.1]))
)
def test_cross_entropy_probability_targets(data, reduction, weighted, smoothing, z_loss):
    z, _, t, _, cw = data
    kw = dict(
        weight=cw if weighted else None,
        reduction=reduction,
        label_smoothing=smoothing,
        z_loss=z_loss,
    )
    same(xent.cross_entropy(lazy(z), lazy(t), **kw), xent.cross_entropy(z, t, **kw))


@pytest.mark.parametrize(
    "from_logits,smoothing,ignore_class,z_loss,softcap",
    [
        (True, 0.0, None, 0.0, None),
        (True, 0.1, 4, 0.0, None),
        (True, 0.0, 4, 0.1, 5.0),
        (True, 0.1, None, 0.1, None),
        (False, 0.0, None, 0.0, None),
        (False, 0.2, 4, 0.0, None),
    ],
)
def test_keras_functions(data, from_logits, smoothing, ignore_class, z_loss, softcap):
    z, y, t, _, _ = data
    pred = z if from_logits else np.abs(z) + 0.01
    big = dict(z_loss=z_loss, softcap=softcap) if from_logits else {}
    kw = dict(from_logits=from_logits, label_smoothing=smoothing, **big)
    same(
        xent.sparse_categorical_crossentropy(lazy(y), lazy(pred), ignore_class=ignore_class, **kw),
        xent.sparse_categorical_crossentropy(y, pred, ignore_class=ignore_class, **kw),
    )
    same(
        xent.categorical_crossentropy(lazy(t), lazy(pred), **kw),
        xent.categorical_crossentropy(t, pred, **kw),
    )


@pytest.mark.parametrize(
    "reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight", "none"]
)
@pytest.mark.parametrize("weights", ["none", "flat", "trailing axis", "dask"])
@pytest.mark.parametrize("ignore_class", [None, 4])
def test_keras_loss_objects(data, reduction, weights, ignore_class):
    z, y, t, w, _ = data
    sw = {"none": None, "flat": w, "trailing axis": w[:, None], "dask": lazy(w)}[weights]
    sw_np = None if sw is None else np.asarray(sw)
    sparse = xent.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=ignore_class, label_smoothing=0.1, reduction=reduction
    )
    same(sparse(lazy(y), lazy(z), sample_weight=sw), sparse(y, z, sample_weight=sw_np))
    dense = xent.CategoricalCrossentropy(reduction=reduction)
    p = np.abs(z) + 0.01
    same(dense(lazy(t), lazy(p), sample_weight=sw), dense(t, p, sample_weight=sw_np))


def test_class_axis_not_last(data):
    z, y, t, _, _ = data
    zt, tt = np.ascontiguousarray(z.T), np.ascontiguousarray(t.T)
    dz = da.from_array(zt, chunks=(C, CHUNKS))
    dt = da.from_array(tt, chunks=(C, CHUNKS))
    loss = xent.CategoricalCrossentropy(from_logits=True, axis=0)
    same(loss(dt, dz), loss(tt, zt))
    same(
        xent.categorical_crossentropy(dt, dz, from_logits=True, axis=0),
        xent.categorical_crossentropy(tt, zt, from_logits=True, axis=0),
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,ignore", list(itertools.product([False, True], repeat=2)))
def test_nll_loss(data, reduction, weighted, ignore):
    z, y, _, _, cw = data
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    y = np.where(y == 4, -100, y) if ignore else y
    kw = dict(weight=cw if weighted else None, reduction=reduction)
    same(xent.nll_loss(lazy(log_p), lazy(y), **kw), xent.nll_loss(log_p, y, **kw))


@pytest.mark.parametrize("z_loss,softcap", [(0.0, None), (0.1, 5.0)])
def test_optax_functions(data, z_loss, softcap):
    z, y, t, _, _ = data
    kw = dict(z_loss=z_loss, softcap=softcap)
    same(xent.softmax_cross_entropy(lazy(z), lazy(t), **kw), xent.softmax_cross_entropy(z, t, **kw))
    same(
        xent.softmax_cross_entropy_with_integer_labels(lazy(z), lazy(y), **kw),
        xent.softmax_cross_entropy_with_integer_labels(z, y, **kw),
    )
    with pytest.raises(ValueError, match="not available for dask inputs"):
        xent.softmax_cross_entropy(lazy(z), lazy(t), where=np.ones(z.shape, bool))
