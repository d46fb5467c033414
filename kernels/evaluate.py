"""The fused evaluation kernels: per row, the loss and the rank of the true class.

``rank`` is the position of the true class ``y`` in a stable descending sort of the row
(``np.argsort(-row, kind="stable")``): the number of classes scoring higher, plus those
scoring the same with a smaller index.  NaN scores sort last, in index order, as NumPy
sorts them.  Accuracy is ``rank == 0`` (``np.argmax`` picks the first maximum: the same
rule), top-k accuracy is ``rank < k``: no sort, no partition, no temporary.

Each row is streamed from memory once by the loss; the rank count re-reads it from cache
(a row of 131,072 float32 is 512 KiB, well inside L2).
"""

import numpy as np
from numba import njit, prange

from ._config import PARALLEL, ROW, SCALAR
from ._half import widen
from .probs import clip, dense_probs_row, row_total
from .rows import dense_row, sparse_row
from .stream import IGNORED


@njit(**ROW)
def _count_at_least(block, v):
    n = 0
    for j in range(block.shape[0]):
        n += 1 if widen(block[j]) >= v else 0
    return n


@njit(**ROW)
def _count_above(block, v):
    n = 0
    for j in range(block.shape[0]):
        n += 1 if widen(block[j]) > v else 0
    return n


@njit(**ROW)
def _count_numbers(block):
    n = 0
    for j in range(block.shape[0]):
        x = widen(block[j])
        n += 1 if x == x else 0
    return n


@njit(**SCALAR)
def rank_of(row, y):
    """Position of class ``y`` in the stable descending order of ``row`` (NaN last)."""
    v = widen(row[y])
    if v == v:
        return _count_at_least(row[:y], v) + _count_above(row[y + 1 :], v)
    # a NaN score ranks after every number and after the NaNs before it
    return y + _count_numbers(row[y + 1 :])


@njit(**SCALAR)
def _first_argmax(trow):
    """Index of the first largest target (Keras's ``argmax(y_true)``)."""
    best = 0
    v = widen(trow[0])
    for j in range(1, trow.shape[0]):
        x = widen(trow[j])
        if x > v:
            best = j
            v = x
    return best


@njit(**PARALLEL)
def evaluate_sparse(pred, labels, from_logits, lo, hi, no_weights, out_loss, out_rank):
    """Per row: Keras's sparse loss (logits, or renormalised clipped probabilities) and the
    rank of the label.  ``IGNORED`` rows give loss 0 and rank -1 and are not read."""
    n, c = pred.shape
    for i in prange(n):
        y = labels[i]
        if y == IGNORED or y < 0 or y >= c:
            out_loss[i] = 0.0 if y == IGNORED else np.nan
            out_rank[i] = -1
            continue
        row = pred[i]
        if from_logits:
            loss, _ = sparse_row(row, y, 0.0, no_weights)
        else:
            total = row_total(row, True)
            loss = -np.log(np.float64(clip(widen(row[y]) / total, lo, hi)))
        out_loss[i] = loss
        out_rank[i] = rank_of(row, y)


@njit(**PARALLEL)
def evaluate_dense(pred, t, from_logits, lo, hi, no_weights, out_loss, out_rank):
    """Per row: Keras's categorical loss against the target row and the rank of the target
    row's first arg-max (the class Keras's categorical accuracy compares)."""
    n, c = pred.shape
    for i in prange(n):
        row = pred[i]
        trow = t[i]
        if from_logits:
            loss, _ = dense_row(row, trow, 0.0, no_weights)
        else:
            loss = dense_probs_row(row, trow, 0.0, lo, hi, True)
        out_loss[i] = loss
        out_rank[i] = rank_of(row, _first_argmax(trow))
