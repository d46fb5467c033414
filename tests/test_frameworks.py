"""Inputs from PyTorch, JAX, DLPack and ml_dtypes; results back in the caller's framework.

Expected values come from the NumPy path on the same float32 values (16-bit values widened
exactly), which ``test_grid.py`` checks against the float64 reference.  CI installs torch and
JAX through the ``peers`` extra, so these run there.
"""

import tracemalloc

import numpy as np
import pytest

import xent

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
ml_dtypes = pytest.importorskip("ml_dtypes")

N, C = 257, 33


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((N, C)) * 2).astype(np.float32)
    y = rng.integers(0, C, N)
    t = rng.random((N, C)).astype(np.float32)
    t /= t.sum(1, keepdims=True)
    return z, y, t


def widened(x_bf16_torch):
    """The float32 values of a bfloat16 tensor (exact)."""
    return x_bf16_torch.float().numpy()


CALLS = {
    "cross_entropy": lambda z, y, t: xent.cross_entropy(z, y),
    "cross_entropy none": lambda z, y, t: xent.cross_entropy(z, y, reduction="none"),
    "cross_entropy probs": lambda z, y, t: xent.cross_entropy(z, t, label_smoothing=0.1),
    "nll_loss": lambda z, y, t: xent.nll_loss(z, y),
    "keras sparse": lambda z, y, t: xent.sparse_categorical_crossentropy(y, z, True),
    "keras dense": lambda z, y, t: xent.categorical_crossentropy(t, z, True),
    "keras loss object": lambda z, y, t: xent.SparseCategoricalCrossentropy(True)(y, z),
    "optax integer": lambda z, y, t: xent.softmax_cross_entropy_with_integer_labels(z, y),
    "optax dense": lambda z, y, t: xent.softmax_cross_entropy(z, t),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_torch_in_torch_out(data, name):
    z, y, t = data
    call = CALLS[name]
    want = call(z, y, t)
    zt = torch.from_numpy(z).requires_grad_(True)  # compared detached (differentiable now)
    got = call(zt, torch.from_numpy(y), torch.from_numpy(t))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_array_equal(got.detach().numpy(), want)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_jax_in_jax_out(data, name):
    z, y, t = data
    call = CALLS[name]
    want = call(z, y, t)
    got = call(jnp.asarray(z), jnp.asarray(y), jnp.asarray(t))
    assert isinstance(got, jax.Array) and got.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got), want)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_bfloat16_from_torch_jax_and_ml_dtypes(data, name):
    """bfloat16 logits give the float32 loss of their (exactly widened) values."""
    z, y, t = data
    call = CALLS[name]
    zb = torch.from_numpy(z).bfloat16()
    want = call(widened(zb), y, t)
    got_torch = call(zb, torch.from_numpy(y), torch.from_numpy(t))
    assert got_torch.dtype == torch.float32  # torch itself would return bfloat16
    np.testing.assert_array_equal(got_torch.numpy(), want)
    zj = jnp.asarray(z).astype(jnp.bfloat16)
    got_jax = call(zj, jnp.asarray(y), jnp.asarray(t))
    assert got_jax.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(got_jax), want)
    zm = np.asarray(zj)  # what NumPy holds for a JAX bfloat16 array
    assert zm.dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(call(zm, y, t), want)


def test_bfloat16_loss_is_float32_not_bfloat16():
    """The issue's example: on a bf16 grid near 7 (step 1/32) torch's own loss is coarse."""
    rng = np.random.default_rng(0)
    z = torch.from_numpy((rng.standard_normal((2000, 1000)) * 3).astype(np.float32)).bfloat16()
    y = torch.from_numpy(rng.integers(0, 1000, 2000))
    ours = xent.cross_entropy(z, y)
    theirs = torch.nn.functional.cross_entropy(z, y)
    exact = torch.nn.functional.cross_entropy(z.double(), y)
    assert theirs.dtype == torch.bfloat16 and ours.dtype == torch.float32
    assert abs(float(ours) - float(exact)) < 1e-5 * float(exact)
    assert abs(float(theirs) - float(exact)) > abs(float(ours) - float(exact))


def test_float16_tensor(data):
    z, y, _ = data
    zh = torch.from_numpy(z).half()
    got = xent.cross_entropy(zh, torch.from_numpy(y), reduction="none")
    np.testing.assert_array_equal(got.numpy(), xent.cross_entropy(zh.numpy(), y, reduction="none"))
    assert got.dtype == torch.float32


def test_float32_tensor_is_read_in_place():
    z = torch.randn(20_000, 500)  # 40 MB
    y = torch.randint(0, 500, (20_000,))
    xent.cross_entropy(z, y)  # compile first
    tracemalloc.start()
    xent.cross_entropy(z, y)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 2**20, peak  # per-row outputs only (160 KB), never the 40 MB input


def test_tensor_on_another_device_is_refused():
    z = torch.empty((4, 3), device="meta")
    with pytest.raises(ValueError, match=r"input is a tensor on device meta.*\.cpu\(\)"):
        xent.cross_entropy(z, torch.zeros(4, dtype=torch.int64))


class _DLPackOnly:
    """An array that only speaks DLPack."""

    def __init__(self, arr):
        self._arr = arr

    def __dlpack__(self, **kwargs):
        return self._arr.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._arr.__dlpack_device__()


def test_dlpack_objects(data):
    z, y, _ = data
    got = xent.sparse_categorical_crossentropy(_DLPackOnly(y), _DLPackOnly(z), from_logits=True)
    np.testing.assert_array_equal(got, xent.sparse_categorical_crossentropy(y, z, True))


def test_dlpack_bfloat16(data):
    """NumPy cannot take bfloat16 through DLPack; torch (imported) reads it for xent."""
    z, y, _ = data
    zb = torch.from_numpy(z).bfloat16()
    got = xent.cross_entropy(_DLPackOnly(zb), _DLPackOnly(torch.from_numpy(y)))
    assert float(got) == float(xent.cross_entropy(zb, torch.from_numpy(y)))


def test_evaluate_and_log_loss_take_tensors(data):
    z, y, _ = data
    ev = xent.evaluate(torch.from_numpy(y), torch.from_numpy(z), from_logits=True)
    assert ev == xent.evaluate(y, z, from_logits=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    assert xent.log_loss(torch.from_numpy(y), torch.from_numpy(p)) == xent.log_loss(y, p)


@pytest.mark.parametrize("source", ["torch bfloat16", "torch float16", "jax bfloat16"])
def test_16_bit_tensors_are_read_in_place(source):
    """No float32 (or any) copy of a 16-bit tensor: the kernels read its memory."""
    z32 = torch.randn(20_000, 500)  # 20 MB in 16 bits
    y = torch.randint(0, 500, (20_000,))
    if source == "torch bfloat16":
        z, target = z32.bfloat16(), y
    elif source == "torch float16":
        z, target = z32.half(), y
    else:
        z, target = jnp.asarray(z32.numpy()).astype(jnp.bfloat16), jnp.asarray(y.numpy())
    xent.cross_entropy(z, target)  # compile first
    tracemalloc.start()
    loss = xent.cross_entropy(z, target)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2 * 2**20, peak  # per-row outputs only, never the 20 MB input
    widened = z32.bfloat16().float() if "bfloat16" in source else z32.half().float()
    np.testing.assert_allclose(float(loss), float(xent.cross_entropy(widened, y)), rtol=1e-6)
