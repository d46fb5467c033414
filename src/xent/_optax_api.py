"""JAX/optax front end: ``softmax_cross_entropy`` and
``softmax_cross_entropy_with_integer_labels`` with optax's ``axis`` and ``where``
semantics, on the same kernels (NumPy in, NumPy out; no JAX needed).
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from xent import _dask, _engine
from xent._frameworks import returns_like_inputs
from xent._inputs import (
    as_array,
    as_labels,
    as_predictions,
    as_targets,
    normalize_axis,
    to_rows,
)
from xent._vocab import check_large_vocab, finish


def _where(where, logits: np.ndarray, ax: int):
    """optax's rule: ``where`` of one dimension fewer than the logits masks examples (it is
    expanded at ``axis``); of the logits' dimension it broadcasts to them and masks classes.

    Returns ``(row_mask, class_rows)``: a flat bool per row, and bool rows ``(N, C)`` (a
    view when broadcasting allows) or ``None``.
    """
    if where is None:
        return None, None
    m = as_array(where, "where")
    if m.dtype.kind != "b":
        raise TypeError(f"where must be a boolean mask, got dtype {m.dtype}")
    batch_shape = logits.shape[:ax] + logits.shape[ax + 1 :]
    if m.ndim == logits.ndim - 1:
        try:
            rows = np.broadcast_to(m, batch_shape)
        except ValueError:
            raise ValueError(
                f"where has shape {m.shape}, which does not broadcast to the batch shape "
                f"{batch_shape} (logits {logits.shape} without axis={ax})"
            ) from None
        return rows.reshape(-1), None
    if m.ndim == logits.ndim:
        try:
            full = np.broadcast_to(m, logits.shape)
        except ValueError:
            raise ValueError(
                f"where has shape {m.shape}, which does not broadcast to logits {logits.shape}"
            ) from None
        class_rows, _ = to_rows(full, ax, name="where")
        return class_rows.any(axis=1), class_rows
    raise ValueError(
        f"where must have {logits.ndim - 1} dimensions (one flag per example) or "
        f"{logits.ndim} (per class, broadcast to logits {logits.shape}); got shape {m.shape}"
    )


def _dask_per_example(func, logits, labels, axis, where, opts, kind, **kw):
    """An optax function on dask arrays: ``func`` on every row block (lazy, per example)."""
    if where is not None or opts.extra_outputs:
        raise ValueError("where, return_lse and return_z_loss are not available for dask inputs")
    dtype = _dask.result_dtype(logits)
    return _dask.per_sample(
        lambda y, z: func(z, y, axis=-1, **kw), labels, logits, axis=axis, kind=kind, dtype=dtype
    )


def _traced(*values) -> bool:
    """Whether a JAX transformation (``jit``, ``grad``, ``vmap``) is tracing this call."""
    jax = sys.modules.get("jax")
    return jax is not None and any(isinstance(v, jax.core.Tracer) for v in values)


class _Call:
    """A validated optax-style call as the engine takes it."""

    def __init__(self, kind, z, ax, rows, second, batch_shape, row_mask, class_rows, opts):
        self.kind, self.z, self.ax, self.rows, self.second = kind, z, ax, rows, second
        self.batch_shape, self.row_mask, self.opts = batch_shape, row_mask, opts
        self.options = opts.row_options(class_mask=class_rows)

    @classmethod
    def dense(cls, logits, labels, axis, where, opts):
        z = as_predictions(logits, "logits")
        ax = normalize_axis(axis, z.ndim, name="logits")
        t = as_array(labels, "labels")
        try:
            t = np.broadcast_to(t, z.shape)  # a zero-stride view: no copy
        except ValueError:
            raise ValueError(
                f"labels has shape {t.shape}, which does not broadcast to logits {z.shape}"
            ) from None
        t = as_targets(t, z.shape, name="labels", pred_name="logits")
        row_mask, class_rows = _where(where, z, ax)
        rows, batch_shape = to_rows(z, ax, name="logits")
        trows, _ = to_rows(t, ax, name="labels")
        return cls("dense", z, ax, rows, trows, batch_shape, row_mask, class_rows, opts)

    @classmethod
    def sparse(cls, logits, labels, axis, where, opts):
        z = as_predictions(logits, "logits")
        ax = normalize_axis(axis, z.ndim, name="logits")
        rows, batch_shape = to_rows(z, ax, name="logits")
        ids, _ = as_labels(
            labels,
            batch_shape,
            rows.shape[1],
            axis=ax,
            name="labels",
            pred_name="logits",
            integer_only=True,
            native=True,  # JAX's int32 labels read as they are, no int64 copy
        )
        row_mask, class_rows = _where(where, z, ax)
        if class_rows is not None:
            n = rows.shape[0]
            own = class_rows[np.arange(n), ids] | ~row_mask
            if not own.all():
                k = int(np.argmax(~own))
                pos = np.unravel_index(k, batch_shape) if batch_shape else ()
                raise ValueError(
                    f"labels has {int(ids[k])} at index {tuple(int(i) for i in pos)}, a class "
                    f"that where excludes for that example; a cross-entropy needs the true class"
                )
        return cls("sparse", z, ax, rows, ids, batch_shape, row_mask, class_rows, opts)

    def losses(self, keep_lse=False):
        """The per-example outputs (loss, and the z-loss / lse when asked for); with
        ``keep_lse`` also every row's log-sum-exp in float64, as ``(outputs, lse)``."""
        rows_fn = _engine.dense_rows if self.kind == "dense" else _engine.sparse_rows
        options = dataclasses.replace(self.options, want_lse=True) if keep_lse else self.options
        loss, lse = rows_fn(self.rows, self.second, options, lse64=keep_lse)
        wanted = lse.astype(loss.dtype, copy=False) if self.opts.want_lse else None
        out = _finish(loss, wanted, self.row_mask, self.opts, self.batch_shape)
        return (out, lse) if keep_lse else out


def _finish(loss, lse, row_mask, opts, batch_shape):
    if row_mask is not None:  # examples outside ``where`` give 0
        loss = np.where(row_mask, loss, loss.dtype.type(0.0))
    return finish(loss, lse, row_mask, opts, batch_shape)


@returns_like_inputs
def softmax_cross_entropy(
    logits,
    labels,
    axis=-1,
    where=None,
    *,
    z_loss=0.0,
    softcap=None,
    return_lse=False,
    return_z_loss=False,
):
    r"""Per-example cross-entropy against label distributions (``optax.softmax_cross_entropy``).

    .. math::

        \ell = -\sum_{c \in W} y_c \log \mathrm{softmax}_W(z)_c
             = \sum_{c \in W} y_c \,(\mathrm{lse}_W(z) - z_c)

    where :math:`W` is the set of classes ``where`` keeps (all by default).  A ``-inf``
    logit whose label is 0 contributes 0 (optax: NaN).

    Parameters
    ----------
    logits : array_like of float, shape ``(..., C, ...)``
    labels : array_like of numbers, broadcastable to ``logits.shape``
        One-hot or soft labels (not checked to sum to one, as in optax).  Broadcasting
        is free: no copy is made.
    axis : int, default -1
        The class axis (tuple axes are not supported: reshape first).
    where : array_like of bool, optional
        With one dimension fewer than ``logits``: examples to include (the others give 0).
        With ``logits``' dimensions (broadcast to them): classes to include; excluded
        classes leave the normaliser; a row with no class included gives 0.
    z_loss, softcap, return_lse, return_z_loss : keyword-only
        Large-vocabulary options, as in :func:`cross_entropy` (per example, no reduction).

    Returns
    -------
    ndarray, shape ``logits.shape`` without ``axis``

    See Also
    --------
    softmax_cross_entropy_with_integer_labels : integer labels, by direct index gather.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], np.float32)
    >>> labels = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    >>> loss = xent.softmax_cross_entropy(logits, labels)
    >>> loss.dtype, [round(float(v), 6) for v in loss]
    (dtype('float32'), [0.27613, 2.951799])
    >>> loss = xent.softmax_cross_entropy(logits, labels, where=np.array([[True, True, False]]))
    >>> [round(float(v), 6) for v in loss]
    [0.126928, 2.215519]
    """
    opts = check_large_vocab(z_loss, softcap, return_lse, return_z_loss)
    if _dask.is_dask(logits) or _dask.is_dask(labels):
        return _dask_per_example(
            softmax_cross_entropy,
            logits,
            labels,
            axis,
            where,
            opts,
            "dense",
            z_loss=z_loss,
            softcap=softcap,
        )
    if _traced(logits, labels, where):
        from xent import _jax_autodiff

        return _jax_autodiff.per_example("dense", _Call.dense, logits, labels, axis, where, opts)
    return _Call.dense(logits, labels, axis, where, opts).losses()


@returns_like_inputs
def softmax_cross_entropy_with_integer_labels(
    logits,
    labels,
    axis=-1,
    where=None,
    *,
    z_loss=0.0,
    softcap=None,
    return_lse=False,
    return_z_loss=False,
):
    r"""Per-example cross-entropy against integer labels
    (``optax.softmax_cross_entropy_with_integer_labels``), by direct index gather.

    .. math::

        \ell = \mathrm{lse}_W(z) - z_y

    with :math:`W` the classes ``where`` keeps.  Labels must be integers in ``[0, C)``:
    optax wraps negative labels and returns NaN for large ones; xent raises a
    ``ValueError`` naming the value and its position.  A label whose own class is
    excluded by a per-class ``where`` is an error too (optax returns a number that is not a
    cross-entropy).

    Parameters
    ----------
    logits : array_like of float, shape ``(..., C, ...)``
    labels : array_like of int, shape ``logits.shape`` without ``axis``
    axis : int, default -1
    where : array_like of bool, optional
        As in :func:`softmax_cross_entropy`.
    z_loss, softcap, return_lse, return_z_loss : keyword-only
        Large-vocabulary options, as in :func:`cross_entropy`.

    Returns
    -------
    ndarray, shape ``logits.shape`` without ``axis``

    See Also
    --------
    softmax_cross_entropy : the same loss against label distributions.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]], np.float32)
    >>> loss = xent.softmax_cross_entropy_with_integer_labels(logits, [0, 1])
    >>> [round(float(v), 6) for v in loss]
    [0.27613, 2.951799]
    >>> loss = xent.softmax_cross_entropy_with_integer_labels(logits, [0, 1],
    ...                                                      where=np.array([True, False]))
    >>> [round(float(v), 6) for v in loss]
    [0.27613, 0.0]
    """
    opts = check_large_vocab(z_loss, softcap, return_lse, return_z_loss)
    if _dask.is_dask(logits) or _dask.is_dask(labels):
        return _dask_per_example(
            softmax_cross_entropy_with_integer_labels,
            logits,
            labels,
            axis,
            where,
            opts,
            "sparse",
            z_loss=z_loss,
            softcap=softcap,
        )
    if _traced(logits, labels, where):
        from xent import _jax_autodiff

        return _jax_autodiff.per_example("sparse", _Call.sparse, logits, labels, axis, where, opts)
    return _Call.sparse(logits, labels, axis, where, opts).losses()
