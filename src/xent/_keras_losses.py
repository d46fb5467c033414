"""Keras 3 loss objects: ``SparseCategoricalCrossentropy`` and ``CategoricalCrossentropy``
(validated at construction; per-sample losses from the Keras functions, then Keras's
sample weighting and reduction, in memory or over dask row blocks)."""

from __future__ import annotations

import sys

import numpy as np

from xent import _dask
from xent._engine import EPSILON
from xent._frameworks import cast_result, check_result_dtype, returns_like_inputs
from xent._inputs import (
    as_sample_weight,
    check_axis,
    check_epsilon,
    check_fraction,
    check_ignore_class,
    fit_weight_axes,
    normalize_axis,
)
from xent._keras_api import _dense, _sparse
from xent._reduce import KerasReduction, check_keras_reduction, keras_reduce


def _dask_sample_weight(sample_weight, batch_shape):
    """Keras's sample-weight broadcasting for the dask path (dask or NumPy weights)."""
    if sample_weight is None:
        return None
    if not _dask.is_dask(sample_weight):
        return as_sample_weight(sample_weight, batch_shape, keras_rules=True, finite=False)
    w = fit_weight_axes(sample_weight.astype(np.float64), batch_shape, keras_rules=True)
    return _dask.broadcast_to(w, tuple(batch_shape))


def _register_with_keras(cls):
    keras = sys.modules.get("keras")
    if keras is None:
        return
    saving = keras.saving
    name = f"xent>{cls.__name__}"
    if saving.get_registered_object(name) is not cls:
        saving.register_keras_serializable(package="xent")(cls)


class _KerasLoss:
    """Shared machinery of the two loss objects: validation at construction, reduction."""

    def __init__(
        self, from_logits, label_smoothing, axis, reduction, name, dtype, epsilon, renormalize
    ):
        self.dtype = check_result_dtype(dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_fraction(label_smoothing, "label_smoothing")
        self.axis = check_axis(axis)
        self.reduction = check_keras_reduction(reduction)
        self.name = name
        self.epsilon = check_epsilon(epsilon)
        self.renormalize = bool(renormalize)

    def _per_sample(self, y_true, y_pred, axis=None):  # pragma: no cover - overridden
        """``(losses, mask of counted entries or None, their float64 sum or None)``."""
        raise NotImplementedError

    @returns_like_inputs
    def call(self, y_true, y_pred):
        """Per-sample losses, before sample weighting and reduction."""
        return cast_result(self._per_sample(y_true, y_pred)[0], self.dtype)

    @returns_like_inputs
    def __call__(self, y_true, y_pred, sample_weight=None):
        if _dask.is_dask(y_pred) or _dask.is_dask(y_true) or _dask.is_dask(sample_weight):
            return cast_result(self._call_dask(y_true, y_pred, sample_weight), self.dtype)
        losses, valid, total = self._per_sample(y_true, y_pred)
        out = keras_reduce(losses, sample_weight, valid, self.reduction, losses.dtype, total)
        return cast_result(out, self.dtype)

    def _call_dask(self, y_true, y_pred, sample_weight):
        """The loss on dask inputs: lazy per-sample for ``"none"``, else the same
        :class:`KerasReduction` partials as in memory, added over row blocks."""
        shape = tuple(y_pred.shape)
        ax = normalize_axis(self.axis, len(shape))
        batch_shape = shape[:ax] + shape[ax + 1 :]
        dtype = _dask.result_dtype(y_pred)
        kind = "dense" if isinstance(self, CategoricalCrossentropy) else "sparse"
        w = _dask_sample_weight(sample_weight, batch_shape)
        if self.reduction is None or self.reduction == "none":
            # blocks arrive with the class axis last
            out = _dask.per_sample(
                lambda y, p: self._per_sample(y, p, -1)[0],
                y_true,
                y_pred,
                axis=self.axis,
                kind=kind,
                dtype=dtype,
            )
            return out if w is None else (out * w).astype(dtype)
        rule = KerasReduction(self.reduction, weighted=w is not None)

        def block(y, p, wb=None):
            losses, valid, total = self._per_sample(y, p, -1)
            return rule.partials(losses, wb, valid, total)

        return _dask.reduced(
            block,
            y_true,
            y_pred,
            axis=self.axis,
            kind=kind,
            n_parts=rule.n_parts,
            combine=lambda s: rule.combine(s, dtype),
            dtype=dtype,
            sample_weight=w,
        )

    def get_config(self):
        """The constructor arguments, as Keras's ``get_config``.  When Keras is loaded, the
        class is registered with it first, so Keras can save and load it (as
        ``"xent>CategoricalCrossentropy"`` and so on; xent must be imported to load)."""
        _register_with_keras(type(self))
        return {
            "name": self.name,
            "reduction": self.reduction,
            "from_logits": self.from_logits,
            "label_smoothing": self.label_smoothing,
            "axis": self.axis,
            "epsilon": self.epsilon,
            "renormalize": self.renormalize,
            "dtype": self.dtype,
        }

    @classmethod
    def from_config(cls, config):
        """The loss object ``get_config`` describes (Keras's ``from_config``)."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class SparseCategoricalCrossentropy(_KerasLoss):
    r"""Sparse categorical cross-entropy loss object (Keras 3 semantics).

    ``loss(y_true, y_pred, sample_weight=None)`` computes
    :func:`sparse_categorical_crossentropy` per sample, multiplies by ``sample_weight``
    (broadcast as Keras does) and reduces:

    .. math::

        \text{sum\_over\_batch\_size: } \frac{\sum_i w_i \ell_i}{n}, \quad
        \text{sum: } \sum_i w_i \ell_i, \quad
        \text{mean\_with\_sample\_weight: } \frac{\sum_i w_i \ell_i}{\sum_i w_i}

    where ``n`` counts the entries not equal to ``ignore_class``.  An empty or all-ignored
    batch gives 0.0.

    Parameters
    ----------
    from_logits, ignore_class, axis, label_smoothing, epsilon, renormalize
        As in :func:`sparse_categorical_crossentropy`.
    reduction : {"sum_over_batch_size", "mean", "sum", "none", None, "mean_with_sample_weight"}
        How per-sample losses are combined; ``"mean"`` is ``"sum_over_batch_size"``.
    name : str
        Kept for Keras compatibility.
    dtype : {None, "float32", "float64", "float16", "bfloat16"} or a Keras ``DTypePolicy``
        The dtype of the returned loss (``None``: float32, float64 for float64 input).  Unlike
        Keras, the loss is computed in float32/float64 whatever ``dtype`` says and only the
        result is rounded to it (bfloat16 needs ``ml_dtypes``).

    See Also
    --------
    CategoricalCrossentropy : the dense-target variant.

    Examples
    --------
    >>> import xent
    >>> loss = xent.SparseCategoricalCrossentropy()
    >>> y_pred = [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]
    >>> round(float(loss([1, 2], y_pred)), 7)
    1.1769392
    >>> round(float(loss([1, 2], y_pred, sample_weight=[0.3, 0.7])), 7)
    0.8135988
    """

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        axis=-1,
        label_smoothing=0.0,
        reduction="sum_over_batch_size",
        name="sparse_categorical_crossentropy",
        dtype=None,
        *,
        epsilon=EPSILON,
        renormalize=True,
    ):
        super().__init__(
            from_logits, label_smoothing, axis, reduction, name, dtype, epsilon, renormalize
        )
        self.ignore_class = check_ignore_class(ignore_class)

    def _per_sample(self, y_true, y_pred, axis=None):
        return _sparse(
            y_true,
            y_pred,
            self.from_logits,
            self.ignore_class,
            self.axis if axis is None else axis,
            self.label_smoothing,
            self.epsilon,
            self.renormalize,
        )

    def get_config(self):
        return {**super().get_config(), "ignore_class": self.ignore_class}


class CategoricalCrossentropy(_KerasLoss):
    r"""Categorical cross-entropy loss object (Keras 3 semantics).

    ``loss(y_true, y_pred, sample_weight=None)`` computes :func:`categorical_crossentropy`
    per sample, weights and reduces as :class:`SparseCategoricalCrossentropy` does
    (without ``ignore_class``).

    Parameters
    ----------
    from_logits, label_smoothing, axis, epsilon, renormalize
        As in :func:`categorical_crossentropy`.
    reduction : {"sum_over_batch_size", "mean", "sum", "none", None, "mean_with_sample_weight"}
        How per-sample losses are combined.
    name : str
        Kept for Keras compatibility.
    dtype : {None, "float32", "float64", "float16", "bfloat16"} or a Keras ``DTypePolicy``
        The dtype of the returned loss (``None``: float32, float64 for float64 input).  Unlike
        Keras, the loss is computed in float32/float64 whatever ``dtype`` says and only the
        result is rounded to it (bfloat16 needs ``ml_dtypes``).

    See Also
    --------
    SparseCategoricalCrossentropy : integer labels, by direct index gather.

    Examples
    --------
    >>> import xent
    >>> loss = xent.CategoricalCrossentropy(reduction="sum")
    >>> round(float(loss([[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])), 7)
    2.3538784
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
        dtype=None,
        *,
        epsilon=EPSILON,
        renormalize=True,
    ):
        super().__init__(
            from_logits, label_smoothing, axis, reduction, name, dtype, epsilon, renormalize
        )

    def _per_sample(self, y_true, y_pred, axis=None):
        loss, total = _dense(
            y_true,
            y_pred,
            self.from_logits,
            self.label_smoothing,
            self.axis if axis is None else axis,
            self.epsilon,
            self.renormalize,
        )
        return loss, None, total
