"""Dask inputs on a real ``distributed.LocalCluster`` with worker processes, uneven chunks:
the results equal the in-memory results.  Marked ``dask`` (deselect with ``-m "not dask"``);
CI installs dask through the test extra and runs it."""

import numpy as np
import pytest

import xent

pytestmark = pytest.mark.dask

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    z = (rng.standard_normal((2_003, 29)) * 2).astype(np.float32)
    y = rng.integers(0, 29, 2_003)
    y[::17] = 3
    t = np.eye(29, dtype=np.float32)[y]
    w = rng.random(2_003)
    chunks = (311, 1, 900, 791)  # uneven, with a one-row chunk
    return z, y, t, w, chunks


def test_workers_are_processes(client):
    info = client.scheduler_info()
    assert len(info["workers"]) == 2
    pids = client.run(lambda: __import__("os").getpid())
    assert len(set(pids.values())) == 2 and __import__("os").getpid() not in pids.values()


def test_evaluate_equals_in_memory(client, data):
    z, y, t, w, chunks = data
    dz = da.from_array(z, chunks=(chunks, 29))
    dy = da.from_array(y, chunks=(chunks,))
    for kw in (dict(), dict(sample_weight=w), dict(ignore_class=3)):
        got = xent.evaluate(dy, dz, from_logits=True, top_k=(1, 5), **kw)
        want = xent.evaluate(y, z, from_logits=True, top_k=(1, 5), **kw)
        assert got.count == want.count
        np.testing.assert_allclose(got.loss, want.loss, rtol=1e-12)
        assert got.accuracy == pytest.approx(want.accuracy, rel=1e-12)
        assert got.top_k_accuracy == pytest.approx(want.top_k_accuracy, rel=1e-12)
    # dense labels, and the class axis split across chunks (rechunked to one)
    dz2 = da.from_array(z, chunks=(500, 10))
    got = xent.evaluate(da.from_array(t, chunks=(700, 29)), dz2, from_logits=True)
    want = xent.evaluate(t, z, from_logits=True)
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-12)
    assert got.top_k_accuracy == pytest.approx(want.top_k_accuracy, rel=1e-12)


def test_loss_functions_are_lazy_and_exact(client, data):
    z, y, t, w, chunks = data
    dz = da.from_array(z, chunks=(chunks, 29))
    dy = da.from_array(y, chunks=(chunks,))
    dt = da.from_array(t, chunks=(chunks, 29))
    per = xent.sparse_categorical_crossentropy(dy, dz, from_logits=True, label_smoothing=0.1)
    assert isinstance(per, da.Array) and per.shape == (2_003,)
    np.testing.assert_allclose(
        per.compute(),
        xent.sparse_categorical_crossentropy(y, z, from_logits=True, label_smoothing=0.1),
        rtol=1e-6,
    )
    per = xent.categorical_crossentropy(dt, dz, from_logits=True)
    np.testing.assert_allclose(
        per.compute(), xent.categorical_crossentropy(t, z, from_logits=True), rtol=1e-6
    )
    for reduction in ("sum_over_batch_size", "sum", "mean_with_sample_weight"):
        loss = xent.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=3, reduction=reduction
        )
        lazy = loss(dy, dz, sample_weight=w)
        assert isinstance(lazy, da.Array) and lazy.shape == ()
        np.testing.assert_allclose(lazy.compute(), loss(y, z, sample_weight=w), rtol=1e-6)
    lazy = xent.CategoricalCrossentropy(from_logits=True)(dt, dz)
    np.testing.assert_allclose(
        lazy.compute(), xent.CategoricalCrossentropy(from_logits=True)(t, z), rtol=1e-6
    )
    yi = np.where(y == 3, -100, y)
    dyi = da.from_array(yi, chunks=(chunks,))
    cw = np.linspace(0.5, 2, 29)
    for reduction in ("mean", "sum"):
        lazy = xent.cross_entropy(dz, dyi, weight=cw, reduction=reduction, label_smoothing=0.1)
        np.testing.assert_allclose(
            lazy.compute(),
            xent.cross_entropy(z, yi, weight=cw, reduction=reduction, label_smoothing=0.1),
            rtol=1e-6,
        )
    lazy = xent.cross_entropy(dz, dyi, reduction="none")
    np.testing.assert_allclose(
        lazy.compute(), xent.cross_entropy(z, yi, reduction="none"), rtol=1e-6
    )


def test_uneven_chunks_are_not_averaged_as_means(client):
    """A mean of per-chunk means would weigh the one-row chunk like the 999-row one."""
    z = np.zeros((1000, 2))
    z[0] = [0.0, 50.0]  # the single row of the first chunk has a large loss
    y = np.zeros(1000, int)
    dz = da.from_array(z, chunks=((1, 999), 2))
    dy = da.from_array(y, chunks=((1, 999),))
    got = xent.SparseCategoricalCrossentropy(from_logits=True)(dy, dz).compute()
    np.testing.assert_allclose(
        got, xent.SparseCategoricalCrossentropy(from_logits=True)(y, z), rtol=1e-12
    )
