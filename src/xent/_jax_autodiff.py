"""JAX transformations of the optax-style functions: ``jax.jit``, ``jax.grad``, ``jax.vmap``.

The kernels run on the host through ``jax.pure_callback``; a ``jax.custom_vjp`` gives the
gradient.  Its forward rule runs the fused kernel, which writes the gradient of the
per-example losses' sum while it computes them (the logits are read once for both); the
backward rule scales that gradient by each example's cotangent.  Cotangents of the returned
log-sum-exp or z-loss term take one more kernel pass (from the saved log-sum-exp), and the
labels' gradient (soft labels: ``lse - u`` on the kept classes) is plain JAX, which ``jit``
drops when nobody asks for it.

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


def _host_call(kind, axis, opts, with_grad, *arrays):
    """The optax front end on host arrays: the outputs, and with ``with_grad`` the gradient
    of the losses' sum and every row's log-sum-exp."""
    from xent._optax_api import _Call

    logits, labels = (to_numpy(a, name) for a, name in zip(arrays[:2], ("logits", "labels")))
    where = np.asarray(arrays[2]) if len(arrays) > 2 else None
    call = getattr(_Call, kind)(logits, labels, axis, where, opts)
    if not with_grad:
        out = call.losses()
        return tuple(np.asarray(o) for o in out) if isinstance(out, tuple) else (np.asarray(out),)
    out, grad, lse = call.losses_and_grad()
    outs = out if isinstance(out, tuple) else (out,)
    return tuple(np.asarray(o) for o in outs) + (
        np.ascontiguousarray(_jax_dtype(grad)),
        lse.reshape(call.batch_shape),
    )


def _host_extra_grad(kind, axis, opts, g_zsq, g_lse, lse, *arrays):
    """The logits' gradient for cotangents of the returned z-loss term (``g_zsq``, per
    example) and log-sum-exp (``g_lse``), from the saved log-sum-exp."""
    from xent._grad import empty_grad
    from xent._optax_api import _Call

    logits, labels = (to_numpy(a, name) for a, name in zip(arrays[:2], ("logits", "labels")))
    where = np.asarray(arrays[2]) if len(arrays) > 2 else None
    call = getattr(_Call, kind)(logits, labels, axis, where, opts)
    keep = np.ones(call.rows.shape[0]) if call.row_mask is None else call.row_mask
    grad, g_rows = empty_grad(call.rows, call.batch_shape, call.ax)
    _engine.grad_rows(
        call.kind,
        call.rows,
        call.second,
        call.options,
        np.zeros(call.rows.shape[0]),
        np.asarray(g_zsq, np.float64).reshape(-1) * keep,
        g_lse=np.asarray(g_lse, np.float64).reshape(-1),
        lse=np.asarray(lse, np.float64).reshape(-1),
        out=g_rows,
    )
    return np.ascontiguousarray(_jax_dtype(grad))


def _unbroadcast(ct, shape):
    """A cotangent of a broadcast operand summed back to the operand's shape."""
    extra = ct.ndim - len(shape)
    ct = ct.sum(axis=tuple(range(extra))) if extra else ct
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and ct.shape[i] != 1)
    return ct.sum(axis=dims, keepdims=True) if dims else ct


def per_example(kind, logits, labels, axis, where, opts):
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
    grad_types = (
        jax.ShapeDtypeStruct(logits.shape, logits.dtype),
        jax.ShapeDtypeStruct(batch_shape, res),
    )
    args = (logits, labels) if where is None else (logits, labels, jnp.asarray(where))
    host_value = functools.partial(_host_call, kind, neg_ax, opts, False)
    host_grad = functools.partial(_host_call, kind, neg_ax, opts, True)

    def callback(fn, types, *a):
        return jax.pure_callback(fn, types, *a, vmap_method="broadcast_all")

    @jax.custom_vjp
    def loss_fn(*a):
        return callback(host_value, out_types, *a)

    def loss_fwd(*a):
        got = callback(host_grad, out_types + grad_types, *a)
        return got[:n_out], (got[n_out], got[n_out + 1], a)

    def loss_bwd(saved, cts):
        grad, lse, a = saved
        ct_loss = cts[0]
        d_logits = grad * jnp.expand_dims(ct_loss, neg_ax).astype(grad.dtype)
        if n_out > 1:
            # the returned z-loss term is z_loss * lse**2 on counted examples
            g_z = cts[1] if opts.return_z_loss else jnp.zeros(batch_shape, res)
            g_l = cts[-1] if opts.return_lse else jnp.zeros(batch_shape, res)
            extra = functools.partial(_host_extra_grad, kind, neg_ax, opts)
            more = callback(
                extra,
                jax.ShapeDtypeStruct(grad.shape, grad.dtype),
                g_z * opts.z_loss if opts.z_loss else g_z,
                g_l,
                lse,
                *a,
            )
            d_logits = d_logits + more
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
