"""The one door to ``xent.kernels``: canonical 2-D inputs in, per-row losses out.

Front ends never call a kernel directly; they ask for row losses here, so a kernel can be
rewritten for speed without touching any front end.
"""

from __future__ import annotations

import numpy as np

from xent import kernels


def _outputs(rows: np.ndarray, want_lse: bool):
    n = rows.shape[0]
    return np.empty(n, rows.dtype), np.empty(n if want_lse else 0, rows.dtype)


def _clip_bounds(dtype, epsilon: float):
    t = np.dtype(dtype).type
    return t(epsilon), t(1.0) - t(epsilon)


def sparse_rows(
    rows: np.ndarray,
    labels: np.ndarray,
    *,
    from_logits: bool,
    smoothing: float = 0.0,
    epsilon: float = 1e-7,
    renormalize: bool = True,
    want_lse: bool = False,
):
    """Per-row sparse cross-entropy (and log-sum-exp of logits on request).

    ``rows``: float32/float64 ``(N, C)``; ``labels``: int64 ``(N,)`` validated, ``IGNORED``
    for rows that give 0.  Returns ``(loss, lse)``, both of ``rows.dtype``; ``lse`` is
    ``None`` unless requested (logits only).
    """
    loss, lse = _outputs(rows, want_lse and from_logits)
    if from_logits:
        kernels.sparse_logits(rows, labels, float(smoothing), loss, lse)
    else:
        lo, hi = _clip_bounds(rows.dtype, epsilon)
        kernels.sparse_probs(rows, labels, float(smoothing), lo, hi, bool(renormalize), loss)
    return loss, (lse if want_lse and from_logits else None)


def dense_rows(
    rows: np.ndarray,
    targets: np.ndarray,
    *,
    from_logits: bool,
    smoothing: float = 0.0,
    epsilon: float = 1e-7,
    renormalize: bool = True,
    want_lse: bool = False,
):
    """Per-row categorical cross-entropy against target rows of the same shape."""
    loss, lse = _outputs(rows, want_lse and from_logits)
    if from_logits:
        kernels.dense_logits(rows, targets, float(smoothing), loss, lse)
    else:
        lo, hi = _clip_bounds(rows.dtype, epsilon)
        kernels.dense_probs(rows, targets, float(smoothing), lo, hi, bool(renormalize), loss)
    return loss, (lse if want_lse and from_logits else None)
