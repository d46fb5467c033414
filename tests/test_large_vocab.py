"""Large-vocabulary options (z-loss, soft-capping, log-sum-exp output) on every logits
front end, the consistency of the front ends with each other, and the memory bound."""

import sys
import textwrap

import numpy as np
import pytest

import xent

import reference as ref
from helpers import tolerances
from subproc import run_isolated


def _lse(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]


def _cap(z, c):
    return z if c is None else c * np.tanh(np.asarray(z, np.float64) / c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("softcap", [None, 0.5, 30.0])
@pytest.mark.parametrize("c", [5, 300])
def test_options_on_every_front_end(rng, dtype, softcap, c):
    rtol, atol = tolerances(dtype)
    n, s = 40, 1e-3
    z = (rng.standard_normal((n, c)) * 8).astype(dtype)
    y = rng.integers(0, c, n)
    t = rng.random((n, c)).astype(dtype)
    zc = _cap(z, softcap)
    lse = _lse(zc)
    zl = s * lse**2
    kw = dict(z_loss=s, softcap=softcap, return_lse=True, return_z_loss=True)

    want_sparse = ref.sparse_categorical_crossentropy(y, zc, from_logits=True)[0] + zl
    want_dense = ref.categorical_crossentropy(t, zc, from_logits=True) + zl
    results = {
        "keras sparse": (xent.sparse_categorical_crossentropy(y, z, True, **kw), want_sparse),
        "keras dense": (xent.categorical_crossentropy(t, z, True, **kw), want_dense),
        "torch index": (xent.cross_entropy(z, y, reduction="none", **kw), want_sparse),
        "torch probs": (xent.cross_entropy(z, t, reduction="none", **kw), want_dense),
        "optax integer": (xent.softmax_cross_entropy_with_integer_labels(z, y, **kw), want_sparse),
        "optax dense": (xent.softmax_cross_entropy(z, t, **kw), want_dense),
    }
    for name, ((loss, z_out, lse_out), want) in results.items():
        np.testing.assert_allclose(loss, want, rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(z_out, zl, rtol=rtol, atol=atol, err_msg=name)
        np.testing.assert_allclose(lse_out, lse, rtol=rtol, atol=atol, err_msg=name)
        assert loss.dtype == z_out.dtype == lse_out.dtype == dtype
    # reductions of the z-loss (torch): mean over counted elements
    yi = np.where(rng.random(n) < 0.3, -100, y)
    got, got_z = xent.cross_entropy(
        z, yi, weight=np.arange(1, c + 1), z_loss=s, softcap=softcap, return_z_loss=True
    )
    want = ref.torch_cross_entropy(z, yi, np.arange(1, c + 1), z_loss=s, softcap=softcap)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    np.testing.assert_allclose(
        got_z, zl[yi != -100].sum() / np.count_nonzero(yi != -100), rtol=rtol, atol=atol
    )


def test_softcap_bounds_infinite_logits():
    z = np.array([[np.inf, 0.0, -np.inf], [np.nan, 0.0, 1.0]])
    got = xent.cross_entropy(z, [1, 1], softcap=5.0, reduction="none")
    want = ref.sparse_categorical_crossentropy([1, 1], 5.0 * np.tanh(z / 5.0), from_logits=True)[0]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.isfinite(got[0]) and np.isnan(got[1])


def test_options_need_logits():
    p = [[0.2, 0.8]]
    for kw in (dict(z_loss=1e-4), dict(softcap=10.0), dict(return_lse=True)):
        with pytest.raises(ValueError, match="from_logits=True"):
            xent.sparse_categorical_crossentropy([1], p, **kw)
        with pytest.raises(ValueError, match="from_logits=True"):
            xent.categorical_crossentropy([[0, 1]], p, **kw)


def test_outputs_only_as_asked(rng):
    z = rng.standard_normal((4, 6))
    y = rng.integers(0, 6, 4)
    assert isinstance(xent.cross_entropy(z, y, z_loss=1e-4), np.floating)
    loss, lse = xent.cross_entropy(z, y, return_lse=True)
    assert lse.shape == (4,)
    np.testing.assert_allclose(lse, _lse(z), rtol=1e-12)
    out = xent.softmax_cross_entropy_with_integer_labels(z, y, return_z_loss=True)
    assert len(out) == 2 and not out[1].any()  # z_loss=0: the term is 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_front_ends_agree(rng, dtype):
    """Where conventions coincide, every front end gives the same number."""
    rtol, atol = tolerances(dtype)
    z = (rng.standard_normal((64, 37)) * 3).astype(dtype)
    y = rng.integers(0, 37, 64)
    onehot = np.eye(37, dtype=dtype)[y]
    per = [
        xent.sparse_categorical_crossentropy(y, z, from_logits=True),
        xent.categorical_crossentropy(onehot, z, from_logits=True),
        xent.cross_entropy(z, y, reduction="none"),
        xent.cross_entropy(z, onehot, reduction="none"),
        xent.softmax_cross_entropy_with_integer_labels(z, y),
        xent.softmax_cross_entropy(z, onehot),
        xent.nll_loss(z - _lse(z)[:, None].astype(dtype), y, reduction="none"),
    ]
    for k, other in enumerate(per[1:], 1):
        np.testing.assert_allclose(other, per[0], rtol=10 * rtol, atol=10 * atol, err_msg=str(k))
    # probabilities: Keras without renormalisation at sklearn's epsilon == log_loss
    p = np.exp(z.astype(np.float64) - _lse(z)[:, None]).astype(dtype)
    p /= p.sum(1, keepdims=True, dtype=np.float64).astype(dtype)
    eps = float(np.finfo(dtype).eps)
    keras = xent.SparseCategoricalCrossentropy(epsilon=eps, renormalize=False)(y, p)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = xent.log_loss(y, p, labels=np.arange(37))
    np.testing.assert_allclose(sk, keras, rtol=10 * rtol)


def test_peak_memory_is_bounded_by_rows_not_elements():
    """Soft-capping, masks, class weights, z-loss and the lse output add O(N + threads x C),
    never O(N x C): the calls' own peak resident memory, measured in a fresh process (the
    high-water mark is reset before each call), stays far below the logits' 128 MiB."""
    code = textwrap.dedent(
        """
        import numpy as np, xent

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key):
                    return int(line.split()[1])

        def peak_kib(call):
            open("/proc/self/clear_refs", "w").write("5")
            before = status("VmRSS")
            call()
            return status("VmHWM") - before

        z = np.random.default_rng(0).standard_normal((2048, 16384), np.float32)
        t = np.zeros_like(z)
        y = np.zeros(2048, np.int64)
        keep = np.ones((1, 16384), bool)
        calls = [
            lambda: xent.cross_entropy(z, y, softcap=30.0, z_loss=1e-4, return_lse=True),
            lambda: xent.cross_entropy(z, y, weight=np.ones(16384), label_smoothing=0.1),
            lambda: xent.cross_entropy(z, t, softcap=30.0, weight=np.ones(16384)),
            lambda: xent.softmax_cross_entropy(z, t, where=keep),
            lambda: xent.softmax_cross_entropy_with_integer_labels(z, y, where=keep),
        ]
        for call in calls:
            call()  # compile first: compilation memory is not the kernel's
        print(max(peak_kib(call) for call in calls))
        """
    )
    out = run_isolated([sys.executable, "-c", code], timeout=600)
    if "clear_refs" in out.stderr:
        pytest.skip("this kernel does not allow resetting the peak RSS (/proc/self/clear_refs)")
    assert out.returncode == 0, out.stderr
    growth_kib = int(out.stdout.split()[-1])
    assert growth_kib < 16 * 1024, f"peak RSS grew by {growth_kib} KiB for 128 MiB of logits"
