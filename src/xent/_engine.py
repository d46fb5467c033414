"""The one door to ``xent.kernels``: canonical 2-D inputs in, per-row losses out.

Front ends never call a kernel directly; they ask for row losses here, so a kernel can be
rewritten for speed without touching any front end.
"""

from __future__ import annotations

import numpy as np

from xent import kernels
from xent._threading import ensure_threading_layer


def _outputs(rows: np.ndarray, want_lse: bool):
    n = rows.shape[0]
    return np.empty(n, rows.dtype), np.empty(n if want_lse else 0, rows.dtype)


def _clip_bounds(dtype, epsilon: float):
    t = np.dtype(dtype).type
    return t(epsilon), t(1.0) - t(epsilon)


def _rows(kind, rows, second, from_logits, smoothing, epsilon, renormalize, want_lse):
    ensure_threading_layer()
    want_lse = want_lse and from_logits
    loss, lse = _outputs(rows, want_lse)
    if from_logits:
        if kind == "dense":
            kernel = kernels.dense_logits
        elif rows.shape[1] <= kernels.SHORT_ROW:
            kernel = kernels.sparse_logits_short_rows  # many short rows: row blocks
        else:
            kernel = kernels.sparse_logits
        kernel(rows, second, float(smoothing), loss, lse)
    else:
        kernel = kernels.sparse_probs if kind == "sparse" else kernels.dense_probs
        lo, hi = _clip_bounds(rows.dtype, epsilon)
        kernel(rows, second, float(smoothing), lo, hi, bool(renormalize), loss)
    return loss, (lse if want_lse else None)


def sparse_rows(rows, labels, *, from_logits, smoothing=0.0, epsilon=1e-7, renormalize=True,
                want_lse=False):
    """Per-row sparse cross-entropy (and log-sum-exp of logits on request).

    ``rows``: float32/float64 ``(N, C)``; ``labels``: int64 ``(N,)`` validated, ``IGNORED``
    for rows that give 0.  Returns ``(loss, lse)``, both of ``rows.dtype``; ``lse`` is
    ``None`` unless requested (logits only).
    """
    return _rows("sparse", rows, labels, from_logits, smoothing, epsilon, renormalize, want_lse)


def dense_rows(rows, targets, *, from_logits, smoothing=0.0, epsilon=1e-7, renormalize=True,
               want_lse=False):
    """Per-row categorical cross-entropy against target rows of the same shape."""
    return _rows("dense", rows, targets, from_logits, smoothing, epsilon, renormalize, want_lse)
