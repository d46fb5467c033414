"""Reductions from per-sample losses to what a loss object returns (Keras rules).

Sums run in float64 with NumPy's pairwise summation over the per-sample values, in a
fixed order: the result does not depend on the number of threads.
"""

from __future__ import annotations

import numpy as np

from xent._inputs import as_array

#: The reductions a Keras-style loss object accepts (``None`` means ``"none"``).
KERAS_REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "none", None, "mean_with_sample_weight")


def check_keras_reduction(reduction):
    """Return ``reduction`` if allowed, else raise ``ValueError`` listing the allowed ones."""
    if reduction not in KERAS_REDUCTIONS or isinstance(reduction, bool):
        allowed = ", ".join(repr(r) for r in KERAS_REDUCTIONS)
        raise ValueError(f"reduction={reduction!r} is not supported; use one of {allowed}")
    return reduction


def broadcast_sample_weight(sample_weight, shape: tuple) -> np.ndarray | None:
    """Sample weights as float64 broadcast to the per-sample ``shape`` (Keras rules).

    As Keras does, a weight with one dimension more whose last axis has size 1 is squeezed,
    and one with one dimension fewer gets a trailing axis, before broadcasting.
    """
    if sample_weight is None:
        return None
    w = as_array(sample_weight, "sample_weight")
    if w.dtype.kind not in "biuf":
        raise TypeError(f"sample_weight must be numeric, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim == len(shape) + 1 and w.shape[-1] == 1:
        w = w[..., 0]
    elif w.ndim == len(shape) - 1 and w.ndim > 0:
        w = w[..., None]
    try:
        return np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(
            f"sample_weight has shape {np.shape(sample_weight)}, which does not broadcast to "
            f"the per-sample loss shape {tuple(shape)}"
        ) from None


def keras_reduce(losses: np.ndarray, sample_weight, valid, reduction, dtype):
    """Reduce per-sample ``losses`` as a Keras 3 loss object does.

    ``valid`` is the boolean mask of counted entries (``ignore_class``), or ``None``.

    * ``"none"`` / ``None``: ``w * loss`` per sample;
    * ``"sum"``: ``sum(w * loss)``;
    * ``"sum_over_batch_size"`` / ``"mean"``: ``sum(w * loss) / n`` with ``n`` the number of
      counted entries;
    * ``"mean_with_sample_weight"``: ``sum(w * loss) / sum(w)`` over counted entries
      (``/ n`` without weights).

    A zero divisor (empty or all-ignored batch) gives 0.0, as Keras's ``divide_no_nan``.
    """
    out_type = np.dtype(dtype).type
    w = broadcast_sample_weight(sample_weight, losses.shape)
    if reduction is None or reduction == "none":
        return losses if w is None else (losses * w).astype(dtype, copy=False)
    if w is None:
        total = np.sum(losses, dtype=np.float64)
    else:
        total = np.sum(losses * w, dtype=np.float64)
    if reduction == "sum":
        return out_type(total)
    count = losses.size if valid is None else int(np.count_nonzero(valid))
    if reduction == "mean_with_sample_weight" and w is not None:
        divisor = float(np.sum(w if valid is None else w[valid], dtype=np.float64))
    else:
        divisor = float(count)
    return out_type(total / divisor) if divisor != 0.0 else out_type(0.0)
