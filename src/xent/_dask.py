"""Dask support: the same kernels on every row block of a ``dask.array``, partial sums
combined exactly (never an average of per-chunk means, which is biased for uneven chunks).

The core never imports dask: these helpers are reached only when an input already is a
dask array (so dask is imported), and import it then.  Inputs are chunked along rows; the
class axis is rechunked to a single chunk when needed (a row must be in one block).
"""

from __future__ import annotations

import sys

import numpy as np


def is_dask(x) -> bool:
    """Whether ``x`` is a dask array (without importing dask)."""
    mod = sys.modules.get("dask.array")
    return mod is not None and isinstance(x, mod.Array)


def _da():
    import dask.array as da

    return da


def _rows(pred, axis=-1):
    """``(rows, batch_shape)``: class axis moved last, one chunk along it, flattened."""
    da = _da()
    pred = pred if is_dask(pred) else da.from_array(np.asarray(pred), chunks="auto")
    if pred.ndim == 0:
        raise ValueError("y_pred must have a class axis, got a scalar")
    pred = da.moveaxis(pred, axis, -1)
    c = pred.shape[-1]
    pred = pred.rechunk({pred.ndim - 1: -1})
    batch_shape = pred.shape[:-1]
    if pred.ndim != 2:
        pred = pred.reshape(-1, c)
    return pred, batch_shape


def _aligned(x, row_chunks, trailing=None):
    """``x`` as a dask array of ``len(row_chunks)`` row blocks matching the predictions."""
    da = _da()
    if x is None:
        return None
    arr = x if is_dask(x) else da.from_array(np.asarray(x), chunks=-1)
    n = sum(row_chunks)
    if trailing is None:
        arr = arr.reshape(n) if arr.shape != (n,) else arr
        return arr.rechunk((row_chunks,))
    arr = arr.reshape(n, trailing) if arr.shape != (n, trailing) else arr
    return arr.rechunk((row_chunks, (trailing,)))


def _labels_aligned(y_true, axis, kind, batch_shape, row_chunks, c):
    da = _da()
    y = y_true if is_dask(y_true) else da.from_array(np.asarray(y_true), chunks=-1)
    if kind == "dense":
        y = da.moveaxis(y, axis, -1)
        return _aligned(y, row_chunks, c)
    if y.shape == tuple(batch_shape) + (1,):
        y = y[..., 0]
    if y.shape != tuple(batch_shape):
        raise ValueError(f"y_true has shape {y.shape}; sparse labels need shape {tuple(batch_shape)}")
    return _aligned(y, row_chunks)


# ------------------------------------------------------------------ per-sample losses
def per_sample(block_fn, y_true, y_pred, *, axis, kind, dtype):
    """A lazy per-sample loss: ``block_fn(labels_block, pred_rows_block)`` on every block."""
    da = _da()
    pred, batch_shape = _rows(y_pred, axis)
    c = pred.shape[1]
    labels = _labels_aligned(y_true, axis, kind, batch_shape, pred.chunks[0], c)
    out = da.blockwise(
        block_fn, "i", labels, "ij" if kind == "dense" else "i", pred, "ij",
        dtype=dtype, concatenate=True,
    )
    return out.reshape(batch_shape) if len(batch_shape) != 1 else out


def reduced(block_fn, y_true, y_pred, *, axis, kind, n_parts, combine, sample_weight=None):
    """A lazy 0-d result: ``block_fn`` returns ``n_parts`` float64 partial sums per block;
    they are summed over blocks and ``combine(sums)`` (dask arithmetic) gives the value."""
    da = _da()
    pred, batch_shape = _rows(y_pred, axis)
    c = pred.shape[1]
    row_chunks = pred.chunks[0]
    labels = _labels_aligned(y_true, axis, kind, batch_shape, row_chunks, c)
    args = [labels, "ij" if kind == "dense" else "i", pred, "ij"]
    if sample_weight is not None:
        w = sample_weight if is_dask(sample_weight) else np.asarray(sample_weight, np.float64)
        if not is_dask(w):
            w = np.broadcast_to(w, tuple(batch_shape)) if w.ndim <= len(batch_shape) else w
        args += [_aligned(w, row_chunks), "i"]
    parts = da.blockwise(
        lambda *blocks: np.asarray(block_fn(*blocks), np.float64).reshape(1, n_parts),
        "ik", *args, new_axes={"k": n_parts}, adjust_chunks={"i": 1},
        dtype=np.float64, concatenate=True,
    )
    return combine(parts.sum(axis=0))


def _safe_ratio(num, den, empty):
    da = _da()
    return da.where(den != 0, num / da.where(den != 0, den, 1.0), empty)


# ------------------------------------------------------------------ Keras
def keras_function(func, y_true, y_pred, *, dense, axis, **kw):
    """A Keras-style per-sample function on dask inputs (lazy, per-sample shape)."""
    pred_dtype = np.float64 if np.dtype(getattr(y_pred, "dtype", np.float64)) == np.float64 else np.float32
    kind = "dense" if dense else "sparse"
    return per_sample(lambda y, p: func(y, p, axis=-1, **kw), y_true, y_pred, axis=axis,
                      kind=kind, dtype=pred_dtype)


def keras_loss_object(loss_obj, y_true, y_pred, sample_weight, dense):
    """A Keras-style loss object on dask inputs: lazy per-sample (``"none"``) or lazy 0-d."""
    kind = "dense" if dense else "sparse"
    red = loss_obj.reduction
    if red is None or red == "none":
        if sample_weight is not None:
            raise ValueError("with dask inputs and reduction='none', multiply by sample_weight yourself")
        return per_sample(lambda y, p: loss_obj._per_sample(y, p)[0], y_true, y_pred,
                          axis=loss_obj.axis, kind=kind, dtype=np.float64)

    def block(y, p, w=None):
        losses, valid = loss_obj._per_sample(y, p)
        losses = losses.astype(np.float64)
        ww = np.ones(losses.shape) if w is None else np.asarray(w, np.float64)
        counted = np.ones(losses.shape, bool) if valid is None else valid
        return [np.sum(losses * ww), np.count_nonzero(counted), np.sum(ww[counted])]

    def combine(s):
        if red == "sum":
            return s[0]
        if red == "mean_with_sample_weight" and sample_weight is not None:
            return _safe_ratio(s[0], s[2], 0.0)
        return _safe_ratio(s[0], s[1], 0.0)

    return reduced(block, y_true, y_pred, axis=loss_obj.axis, kind=kind, n_parts=3,
                   combine=combine, sample_weight=sample_weight)


# ------------------------------------------------------------------ PyTorch
def torch_cross_entropy(func, input, target, *, reduction, weight, ignore_index, **kw):
    """``xent.cross_entropy`` on dask inputs of shape ``(N, C)`` (classes on dim 1)."""
    if len(input.shape) != 2:
        raise ValueError("dask inputs to cross_entropy must have shape (N, C)")
    dense = np.dtype(getattr(target, "dtype", np.int64)).kind == "f"
    kind = "dense" if dense else "sparse"
    if reduction == "none":
        return per_sample(
            lambda y, p: func(p, y, weight=weight, ignore_index=ignore_index, reduction="none", **kw),
            target, input, axis=1, kind=kind, dtype=np.dtype(input.dtype))
    w = None if weight is None else np.asarray(weight, np.float64)

    def block(y, p):
        total = func(p, y, weight=weight, ignore_index=ignore_index, reduction="sum", **kw)
        if dense:
            den = y.shape[0]
        else:
            keep = y != ignore_index
            den = np.count_nonzero(keep) if w is None else np.sum(w[y[keep]])
        return [total, den]

    def combine(s):
        if reduction == "sum":
            return s[0]
        return s[0] / s[1]  # 0 / 0 is NaN, as PyTorch

    return reduced(block, target, input, axis=1, kind=kind, n_parts=2, combine=combine)


# ------------------------------------------------------------------ evaluate
def evaluate(y_true, y_pred, *, from_logits, top_k, sample_weight, ignore_class, label_format):
    """``xent.evaluate`` over dask inputs: each row block runs the fused kernel on a worker,
    the blocks' float64 partial sums are added, the metrics formed once at the end."""
    from xent import _evaluate as ev

    ks = ev.check_top_k(top_k)
    pred, batch_shape = _rows(y_pred, -1)
    c = pred.shape[1]
    y_shape = tuple(y_true.shape) if hasattr(y_true, "shape") else np.shape(y_true)
    kind = ev.label_kind(y_shape, tuple(batch_shape) + (c,), label_format)
    n_parts = 4 + len(ks)

    def block(y, p, w=None):
        totals = ev._Totals(ks)
        ev.evaluate_block(p, y, kind, from_logits=from_logits, ignore_class=ignore_class,
                          weights=w, totals=totals)
        return totals.as_vector()

    sums = reduced(block, y_true, y_pred, axis=-1, kind=kind, n_parts=n_parts,
                   combine=lambda s: s, sample_weight=sample_weight)
    return ev._Totals.from_vector(ks, np.asarray(sums.compute())).result()
