"""Reductions from per-sample losses to what a loss object returns (Keras rules).

Sums run in float64 over the per-sample values, in a fixed order (``_engine.float64_total``:
a compiled loop for float32 losses, else NumPy's pairwise summation): the result does not
depend on the number of threads.
"""

from __future__ import annotations

import numpy as np

from xent import _engine
from xent._inputs import as_sample_weight

#: The reductions a Keras-style loss object accepts (``None`` means ``"none"``).
KERAS_REDUCTIONS = ("sum_over_batch_size", "mean", "sum", "none", None, "mean_with_sample_weight")


def check_keras_reduction(reduction):
    """Return ``reduction`` if allowed, else raise ``ValueError`` listing the allowed ones."""
    if reduction not in KERAS_REDUCTIONS or isinstance(reduction, bool):
        allowed = ", ".join(repr(r) for r in KERAS_REDUCTIONS)
        raise ValueError(f"reduction={reduction!r} is not supported; use one of {allowed}")
    return reduction


class KerasReduction:
    """Keras 3's reduction of per-sample losses, as block partials and a combine.

    A block contributes ``[sum(w * loss), counted entries, sum of w over counted entries]``
    (float64); partials of several blocks add up, and :meth:`combine` forms the value:

    * ``"sum"``: ``sum(w * loss)``;
    * ``"sum_over_batch_size"`` / ``"mean"``: ``sum(w * loss) / n`` with ``n`` the number of
      counted entries;
    * ``"mean_with_sample_weight"``: ``sum(w * loss) / sum(w)`` over counted entries
      (``/ n`` without weights).

    A zero divisor (empty or all-ignored batch) gives 0.0, as Keras's ``divide_no_nan``.
    In memory the whole input is one block; Dask adds the partials of its chunks.
    """

    n_parts = 3

    def __init__(self, reduction, weighted: bool):
        self.reduction = reduction
        self.weighted = weighted

    def partials(self, losses, weights, valid, total=None) -> np.ndarray:
        """``losses`` per sample, ``weights`` already broadcast to their shape (or ``None``),
        ``valid`` the mask of counted entries (or ``None``: all count), ``total`` the losses'
        float64 sum if the kernel took it (or ``None``)."""
        losses = np.asarray(losses)
        if weights is None:
            total = _engine.float64_total(losses.reshape(-1), total)
        else:
            total = np.sum(losses * weights, dtype=np.float64)
        count = losses.size if valid is None else np.count_nonzero(valid)
        if weights is None:
            weight_sum = float(count)
        else:
            weight_sum = np.sum(weights if valid is None else weights[valid], dtype=np.float64)
        return np.array([total, count, weight_sum], np.float64)

    def combine(self, sums, dtype):
        out = _rounded_to(dtype)
        total, count, weight_sum = (float(v) for v in sums)
        if self.reduction == "sum":
            return out(total)
        use_weights = self.reduction == "mean_with_sample_weight" and self.weighted
        divisor = weight_sum if use_weights else count
        return out(total / divisor) if divisor != 0.0 else out(0.0)


def _rounded_to(dtype):
    """A float64 result rounded to ``dtype``; a value above its largest is inf, without
    NumPy's overflow warning (the loss itself is that large: frameworks return inf too)."""
    scalar = np.dtype(dtype).type

    def out(value):
        with np.errstate(over="ignore"):
            return scalar(value)

    return out


def keras_reduce(losses: np.ndarray, sample_weight, valid, reduction, dtype, total=None):
    """Reduce per-sample ``losses`` as a Keras 3 loss object does (see
    :class:`KerasReduction`); ``"none"`` / ``None`` returns ``w * loss`` per sample.

    ``valid`` is the boolean mask of counted entries (``ignore_class``), or ``None``;
    ``total`` the losses' float64 sum if the kernel took it, or ``None``.
    """
    w = None
    if sample_weight is not None:
        w = as_sample_weight(sample_weight, losses.shape, keras_rules=True, finite=False)
    if reduction is None or reduction == "none":
        return losses if w is None else (losses * w).astype(dtype, copy=False)
    rule = KerasReduction(reduction, weighted=w is not None)
    return rule.combine(rule.partials(losses, w, valid, total), dtype)


class TorchReduction:
    """PyTorch's ``"mean"`` / ``"sum"``, with xent's z-loss term, as partials and a combine.

    A block contributes ``[sum of losses, the mean's divisor, sum of z-loss terms, counted
    elements]``; the divisor is the sum of ``weight[target]`` over counted elements for index
    targets with class weights, the number of counted elements without weights, and the
    number of elements for probability targets (pytorch#107680).  ``"mean"`` is
    ``losses / divisor + z / counted`` (0 / 0 is NaN, as PyTorch); ``"sum"`` adds the sums.
    """

    n_parts = 4

    def __init__(self, reduction):
        self.reduction = reduction

    @staticmethod
    def partials(losses, divisor, z, count, total=None) -> np.ndarray:
        """``total``: the losses' float64 sum if the kernel took it, else ``None``."""
        z_sum = 0.0 if z is None else np.sum(z, dtype=np.float64)
        total = _engine.float64_total(np.asarray(losses).reshape(-1), total)
        return np.array([total, divisor, z_sum, count], np.float64)

    def combine(self, sums, dtype, *, z_only=False):
        """The reduced loss (z-loss included), or with ``z_only`` its z-loss term alone."""
        out = _rounded_to(dtype)
        total, divisor, z_sum, count = (np.float64(v) for v in sums)
        if self.reduction == "sum":
            return out(z_sum) if z_only else out(total + z_sum)
        with np.errstate(invalid="ignore", divide="ignore"):
            z_mean = z_sum / count if z_sum != 0.0 else np.float64(0.0)
            if z_only:
                return out(z_mean)
            return out(total / divisor + z_mean)
