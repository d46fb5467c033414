"""JAX transformations of the optax-style functions: ``jax.grad``, ``jax.jit``, ``jax.vmap``
and ``jax.value_and_grad`` give optax's values and gradients on the same inputs."""

import numpy as np
import pytest

import xent

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
jnp = jax.numpy

FUNCS = {
    "sparse": (xent.softmax_cross_entropy_with_integer_labels,
               optax.softmax_cross_entropy_with_integer_labels),
    "dense": (xent.softmax_cross_entropy, optax.softmax_cross_entropy),
}  # fmt: skip


def _data(kind, dtype, shape=(6, 7), seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(size=shape) * 2, dtype)
    if kind == "sparse":
        labels = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]))
    else:
        labels = jnp.asarray(rng.dirichlet(np.ones(shape[-1]), shape[:-1]), dtype)
    up = jnp.asarray(rng.normal(size=shape[:-1]), dtype)
    return z, labels, up


def _weighted(f, up, **kw):
    return lambda z, y: jnp.sum(f(z, y, **kw) * up)


@pytest.mark.parametrize("x64", [False, True])
@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_grad_jit_and_value_and_grad_equal_optax(kind, x64):
    ours, theirs = FUNCS[kind]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        tol = dict(rtol=1e-12, atol=1e-14) if x64 else dict(rtol=2e-5, atol=1e-6)
        z, y, up = _data(kind, dtype)
        f, g = _weighted(ours, up), _weighted(theirs, up)
        want_v, want_g = jax.value_and_grad(g)(z, y)
        for transform in (jax.grad, lambda h: jax.jit(jax.grad(h))):
            got = transform(f)(z, y)
            assert got.dtype == dtype and got.shape == z.shape
            np.testing.assert_allclose(got, want_g, **tol)
        v, grad = jax.jit(jax.value_and_grad(f))(z, y)
        np.testing.assert_allclose(v, want_v, **tol)
        np.testing.assert_allclose(grad, want_g, **tol)
        if kind == "dense":  # soft labels are differentiable too
            np.testing.assert_allclose(
                jax.jit(jax.grad(f, argnums=1))(z, y), jax.grad(g, argnums=1)(z, y), **tol
            )


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_vmap_axis_and_where_equal_optax(kind):
    ours, theirs = FUNCS[kind]
    with jax.enable_x64(True):
        z, y, up = _data(kind, jnp.float64, shape=(3, 5, 4), seed=1)
        tol = dict(rtol=1e-12, atol=1e-14)
        f, g = _weighted(ours, up), _weighted(theirs, up)
        batched = jax.vmap(jax.grad(f))(z, y)
        np.testing.assert_allclose(batched, jax.vmap(jax.grad(g))(z, y), **tol)
        # classes on axis 1, and examples left out by where
        zt = jnp.moveaxis(z, -1, 1)
        yt = y if kind == "sparse" else jnp.moveaxis(y, -1, 1)
        where = jnp.asarray(np.random.default_rng(2).uniform(size=(3, 5)) > 0.3)
        fa = _weighted(ours, up, axis=1, where=where)
        ga = _weighted(theirs, up, axis=1, where=where)
        np.testing.assert_allclose(jax.jit(jax.grad(fa))(zt, yt), jax.grad(ga)(zt, yt), **tol)


def test_lse_and_z_loss_outputs_with_softcap_are_differentiable():
    with jax.enable_x64(True):
        z, y, up = _data("sparse", jnp.float64, seed=3)

        def ours(z):
            loss, zl, lse = xent.softmax_cross_entropy_with_integer_labels(
                z, y, z_loss=1e-2, softcap=3.0, return_z_loss=True, return_lse=True
            )
            return jnp.sum(loss * up) + jnp.sum(zl * up[::-1]) + jnp.sum(lse**2)

        def written_out(z):
            u = 3.0 * jnp.tanh(z / 3.0)
            lse = jax.nn.logsumexp(u, axis=-1)
            loss = optax.softmax_cross_entropy_with_integer_labels(u, y) + 1e-2 * lse**2
            return jnp.sum(loss * up) + jnp.sum(1e-2 * lse**2 * up[::-1]) + jnp.sum(lse**2)

        np.testing.assert_allclose(
            jax.jit(jax.grad(ours))(z), jax.grad(written_out)(z), rtol=1e-12, atol=1e-14
        )


def test_bfloat16_logits_get_bfloat16_gradients():
    z, y, up = _data("sparse", jnp.float32, shape=(40, 33), seed=4)
    zb = z.astype(jnp.bfloat16)
    got = jax.jit(jax.grad(_weighted(FUNCS["sparse"][0], up)))(zb, y)
    assert got.dtype == jnp.bfloat16
    want = jax.grad(_weighted(FUNCS["sparse"][1], up))(zb.astype(jnp.float32), y)
    np.testing.assert_allclose(
        np.asarray(got, np.float32), want, rtol=2.0**-7, atol=1e-6 * float(jnp.abs(want).max())
    )


def test_minus_inf_logits_with_zero_labels_give_zero_gradient():
    """Where optax's gradient is NaN (``0 * -inf``), xent's is 0 (README)."""
    z = jnp.asarray([[0.0, -jnp.inf, 1.0], [2.0, 0.5, -jnp.inf]])
    y = jnp.asarray([[0.3, 0.0, 0.7], [1.0, 0.0, 0.0]])
    got = jax.grad(lambda z: jnp.sum(xent.softmax_cross_entropy(z, y)))(z)
    assert bool(jnp.isfinite(got).all()) and got[0, 1] == 0.0 and got[1, 2] == 0.0
    finite_cols = jnp.asarray([[0, 2], [0, 1]])
    want = jax.grad(lambda z: jnp.sum(optax.softmax_cross_entropy(z, y)))(z)
    np.testing.assert_allclose(
        jnp.take_along_axis(got, finite_cols, 1), jnp.take_along_axis(want, finite_cols, 1),
        rtol=1e-5, atol=1e-6,
    )  # fmt: skip


@pytest.mark.parametrize("c", [10, 1_000])  # the short-row and the long-row gradient kernels
def test_grad_from_the_saved_lse_keeps_large_logits_accurate(c):
    # jax.grad runs the gradient kernel from the forward's saved lse (a float32 pair, JAX
    # holding no float64 here); the lse rounded to float32 alone cost the gradient |lse| 6e-8
    # relative (1.8e-4 at logits near 3000)
    rng = np.random.default_rng(3)
    z = (rng.normal(size=(32, c)) * 3 + 3000).astype(np.float32)
    y = rng.integers(0, c, 32)
    got = jax.grad(lambda z: jnp.sum(xent.softmax_cross_entropy_with_integer_labels(z, y)))(
        jnp.asarray(z)
    )
    z64 = z.astype(np.float64)
    want = np.exp(z64 - z64.max(1, keepdims=True))
    want /= want.sum(1, keepdims=True)
    want[np.arange(32), y] -= 1.0
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-5)
