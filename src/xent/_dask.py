"""Dask adapters: a front end's own block function on every row block of a ``dask.array``.

Two generic drivers and nothing else: :func:`per_sample` maps a per-sample function over the
row blocks, :func:`partial_sums` / :func:`reduced` add the float64 partial sums that a front
end's reduction rule defines for each block and apply that rule's combine once (never an
average of per-chunk means, which is biased for uneven chunks).  The rules themselves live in
the front ends and ``_reduce``: this module knows none of them and imports nothing from xent.

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


def result_dtype(pred):
    """The float type of the losses for predictions ``pred`` (float64 stays float64; every
    other float type is computed in float32), known without computing anything."""
    return np.float64 if np.dtype(getattr(pred, "dtype", np.float64)) == np.float64 else np.float32


def broadcast_to(x, shape):
    """``dask.array.broadcast_to``."""
    return _da().broadcast_to(x, shape)


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
        raise ValueError(
            f"y_true has shape {y.shape}; sparse labels need shape {tuple(batch_shape)}"
        )
    return _aligned(y, row_chunks)


# ------------------------------------------------------------------ drivers
def per_sample(block_fn, y_true, y_pred, *, axis, kind, dtype):
    """A lazy per-sample result: ``block_fn(labels_block, pred_rows_block)`` on every block,
    in the predictions' shape without the class axis."""
    da = _da()
    pred, batch_shape = _rows(y_pred, axis)
    c = pred.shape[1]
    labels = _labels_aligned(y_true, axis, kind, batch_shape, pred.chunks[0], c)
    out = da.blockwise(
        block_fn,
        "i",
        labels,
        "ij" if kind == "dense" else "i",
        pred,
        "ij",
        dtype=dtype,
        concatenate=True,
    )
    return out.reshape(batch_shape) if len(batch_shape) != 1 else out


def partial_sums(block_fn, y_true, y_pred, *, axis, kind, n_parts, sample_weight=None):
    """Lazy ``(n_parts,)`` float64 sums over blocks of ``block_fn(labels, pred_rows[, w])``.

    ``sample_weight`` (dask or NumPy) must already have the per-sample shape; its blocks are
    aligned with the rows and passed as the third argument.
    """
    da = _da()
    pred, batch_shape = _rows(y_pred, axis)
    c = pred.shape[1]
    row_chunks = pred.chunks[0]
    labels = _labels_aligned(y_true, axis, kind, batch_shape, row_chunks, c)
    args = [labels, "ij" if kind == "dense" else "i", pred, "ij"]
    if sample_weight is not None:
        args += [_aligned(sample_weight, row_chunks), "i"]
    parts = da.blockwise(
        lambda *blocks: np.asarray(block_fn(*blocks), np.float64).reshape(1, n_parts),
        "ik",
        *args,
        new_axes={"k": n_parts},
        adjust_chunks={"i": 1},
        dtype=np.float64,
        concatenate=True,
    )
    return parts.sum(axis=0)


def reduced(block_fn, y_true, y_pred, *, axis, kind, n_parts, combine, dtype, sample_weight=None):
    """A lazy 0-d result: :func:`partial_sums`, then ``combine(sums)`` (NumPy in, a scalar of
    ``dtype`` out: the same function the in-memory path calls) on the summed partials."""
    sums = partial_sums(
        block_fn, y_true, y_pred, axis=axis, kind=kind, n_parts=n_parts, sample_weight=sample_weight
    )
    return sums.map_blocks(lambda s: np.asarray(combine(s), dtype), drop_axis=0, dtype=dtype)
