"""JAX transformations of the optax-style functions: ``jax.jit``, ``jax.grad``, ``jax.vmap``.

The kernels run on the host through ``jax.pure_callback``; a ``jax.custom_vjp`` gives the
gradient.  Its forward rule runs the loss kernel and keeps each example's log-sum-exp (O(N)
saved, no ``N x C`` residual); the backward rule runs the gradient kernel once with every
cotangent (of the losses, of a returned z-loss term or log-sum-exp) as per-row
coefficients: one read of the logits, one write of the gradient, rounded once to the
logits' dtype.  The labels' gradient (soft labels: ``lse - u`` on the kept classes) is plain
JAX, which ``jit`` drops when nobody asks for it.

Imported only when a JAX tracer reaches a front end: JAX is imported by then.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from xent import _engine
from xent._frameworks import is_bfloat16, to_numpy
from xent._inputs import normalize_axis


def _jax_dtype(arr: np.ndarray) -> np.ndarray:
    """A host result as JAX takes it back (bfloat16 as ``ml_dtypes.bfloat16``)."""
    if is_bfloat16(arr.dtype):
        return arr.view(ml_dtypes.bfloat16)
    return arr


def _call(make, axis, opts, arrays):
    """The front end's validated call (``make``: ``_optax_api._Call.dense`` or ``.sparse``,
    handed in so that this module does not import the front end that imports it)."""
    logits, labels = (to_numpy(a, name) for a, name in zip(arrays[:2], ("logits", "labels")))
    where = np.asarray(arrays[2]) if len(arrays) > 2 else None
    return make(logits, labels, axis, where, opts)


def _host_forward(make, axis, opts, with_lse, *arrays):
    """The optax front end on host arrays: its outputs, and with ``with_lse`` every row's
    log-sum-exp (saved for the backward pass)."""
    call = _call(make, axis, opts, arrays)
    out, lse = call.losses(keep_lse=True)
    outs = tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else (np.asarray(out),)
    if not with_lse:
        return outs
    # the float64 lse as a pair in the result type (JAX may not hold float64): rounded to
    # float32 alone it would cost the gradient |lse| 6e-8 relative (kernels/grad.py)
    hi = lse.astype(outs[0].dtype)
    lo = (lse - hi).astype(outs[0].dtype)
    return outs + (hi.reshape(call.batch_shape), lo.reshape(call.batch_shape))


def _host_backward(make, axis, opts, ct_loss, ct_z, ct_lse, lse, lse_lo, *arrays):
    """The logits' gradient for the cotangents of the per-example losses, of the returned
    z-loss terms and of the returned log-sum-exp, from the saved log-sum-exp (``lse +
    lse_lo`` in float64, as :func:`_host_forward` split it): one pass of
    the gradient kernel (computed in float32 or float64, rounded once to the logits' dtype)."""
    from xent._grad import empty_grad

    call = _call(make, axis, opts, arrays)
    n = call.rows.shape[0]
    keep = np.ones(n) if call.row_mask is None else call.row_mask.astype(np.float64)
    ct_loss = np.asarray(ct_loss, np.float64).reshape(-1)
    ct_z = np.asarray(ct_z, np.float64).reshape(-1)
    grad, g_rows = empty_grad(call.rows, call.batch_shape, call.ax)
    _engine.grad_rows(
        call.kind,
        call.rows,
        call.second,
        call.options,
        ct_loss * keep,
        opts.z_loss * (ct_loss + ct_z) * keep,  # the loss and the z-loss output hold z lse**2
        g_lse=np.asarray(ct_lse, np.float64).reshape(-1),
        lse=(np.asarray(lse, np.float64) + np.asarray(lse_lo, np.float64)).reshape(-1),
        out=g_rows,
    )
    return np.ascontiguousarray(_jax_dtype(grad))


def _unbroadcast(ct, shape):
    """A cotangent of a broadcast operand summed back to the operand's shape."""
    extra = ct.ndim - len(shape)
    ct = ct.sum(axis=tuple(range(extra))) if extra else ct
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and ct.shape[i] != 1)
    return ct.sum(axis=dims, keepdims=True) if dims else ct


def per_example(kind, make, logits, labels, axis, where, opts):
    """``softmax_cross_entropy`` (``kind="dense"``) or the integer-labels loss (``"sparse"``)
    on JAX values being traced, differentiable with respect to the logits (and soft labels)."""
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if logits.dtype not in (jnp.float32, jnp.float64, jnp.float16, jnp.bfloat16):
        raise TypeError(f"logits must be a floating point array, got dtype {logits.dtype}")
    ax = normalize_axis(axis, logits.ndim, name="logits")
    neg_ax = ax - logits.ndim  # the class axis from the end: unchanged by vmap's batch axis
    batch_shape = logits.shape[:ax] + logits.shape[ax + 1 :]
    res = jnp.float64 if logits.dtype == jnp.float64 else jnp.float32
    n_out = 1 + opts.return_z_loss + opts.return_lse
    out_types = tuple(jax.ShapeDtypeStruct(batch_shape, res) for _ in range(n_out))
    lse_type = jax.ShapeDtypeStruct(batch_shape, res)
    args = (logits, labels) if where is None else (logits, labels, jnp.asarray(where))

    def callback(fn, types, *a):
        return jax.pure_callback(fn, types, *a, vmap_method="broadcast_all")

    @jax.custom_vjp
    def loss_fn(*a):
        return callback(functools.partial(_host_forward, make, neg_ax, opts, False), out_types, *a)

    def loss_fwd(*a):
        host = functools.partial(_host_forward, make, neg_ax, opts, True)
        got = callback(host, out_types + (lse_type, lse_type), *a)
        return got[:n_out], (got[n_out], got[n_out + 1], a)

    def loss_bwd(saved, cts):
        lse, lse_lo, a = saved
        zero = jnp.zeros(batch_shape, res)
        ct_loss = cts[0] if cts[0] is not None else zero
        ct_z = cts[1] if opts.return_z_loss else zero
        ct_lse = cts[-1] if opts.return_lse else zero
        host = functools.partial(_host_backward, make, neg_ax, opts)
        grad_type = jax.ShapeDtypeStruct(a[0].shape, a[0].dtype)
        d_logits = callback(host, grad_type, ct_loss, ct_z, ct_lse, lse, lse_lo, *a)
        d_labels = None
        if kind == "dense":
            d_labels = _labels_grad(a, lse, ct_loss, neg_ax, where is not None, opts)
        return (d_logits, d_labels) + ((None,) if where is not None else ())

    loss_fn.defvjp(loss_fwd, loss_bwd)
    out = loss_fn(*args)
    return out[0] if n_out == 1 else tuple(out)


def _labels_grad(a, lse, ct_loss, neg_ax, has_where, opts):
    """``d loss / d labels = lse - u`` on the kept classes (0 elsewhere), times the cotangent."""
    logits, labels = a[0], a[1]
    u = logits.astype(lse.dtype)
    if opts.softcap:
        u = opts.softcap * jnp.tanh(u / opts.softcap)
    d = (jnp.expand_dims(lse, neg_ax) - u) * jnp.expand_dims(ct_loss, neg_ax).astype(lse.dtype)
    if has_where:
        where = a[2]
        keep = jnp.expand_dims(where, neg_ax) if where.ndim == logits.ndim - 1 else where
        d = jnp.where(keep, d, 0.0)
    return _unbroadcast(d, labels.shape).astype(labels.dtype)
