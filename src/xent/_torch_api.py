"""PyTorch front end: ``cross_entropy`` and ``nll_loss`` with ``torch.nn.functional``'s
semantics (classes on dim 1, ``ignore_index``, per-class ``weight``, the ``"mean"``
denominators), computed by the same kernels as every other front end.
"""

from __future__ import annotations

import sys

import numpy as np

from xent import _dask, _engine
from xent._frameworks import as_float64, dtype_name, is_bfloat16, returns_like_inputs
from xent._grad import empty_grad, forward_backward, inplace_rows
from xent._inputs import (
    as_array,
    as_class_weights,
    as_labels,
    as_predictions,
    as_targets,
    check_counted_labels,
    check_ignore_class,
    to_rows,
)
from xent._numbers import check_number
from xent._reduce import TorchReduction
from xent._vocab import check_large_vocab, package, z_terms

#: What ``reduction`` may be, as in PyTorch.
TORCH_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in TORCH_REDUCTIONS:
        allowed = ", ".join(repr(r) for r in TORCH_REDUCTIONS)
        raise ValueError(f"reduction={reduction!r} is not supported; use one of {allowed}")
    return reduction


def check_smoothing(label_smoothing) -> float:
    """``label_smoothing`` as a float in [0, 1], or PyTorch's error."""
    smoothing = check_number(label_smoothing, "label_smoothing")
    if not 0.0 <= smoothing <= 1.0:
        raise TorchInputError(
            f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing!r}"
        )
    return float(smoothing)


class TorchInputError(ValueError, RuntimeError):
    """Bad input to a PyTorch-style function (:func:`cross_entropy`, :func:`nll_loss`).

    A ``ValueError``, as everywhere in xent, and also the ``RuntimeError`` PyTorch raises for
    the same input, so that ``except RuntimeError`` written for PyTorch still catches it.  The
    message starts with PyTorch's own sentence, then xent's detail.

    Examples
    --------
    >>> import xent
    >>> try:
    ...     xent.cross_entropy([[0.0, 1.0, 2.0]] * 2, [0, 1, 2])
    ... except RuntimeError as exc:
    ...     print(type(exc).__name__, isinstance(exc, ValueError), str(exc).split(". ")[0])
    TorchInputError True Expected input batch_size (2) to match target batch_size (3)
    """


class _TorchDtypeError(TorchInputError, TypeError):
    """A target of the wrong dtype: also a ``TypeError``, as xent's other dtype errors."""


_TORCH_DTYPE_NAMES = {
    "int64": "Long",
    "int32": "Int",
    "int16": "Short",
    "int8": "Char",
    "uint8": "Byte",
    "bool": "Bool",
    "float64": "Double",
    "float32": "Float",
    "float16": "Half",
    "bfloat16": "BFloat16",
}


def _is_float(dtype) -> bool:
    """Floating point, bfloat16 included (PyTorch's test for probability targets)."""
    return dtype.kind == "f" or is_bfloat16(dtype)


def _torch_dtype(dtype) -> str:
    name = dtype_name(dtype)
    return _TORCH_DTYPE_NAMES.get(name, name)


def _check_like_torch(pred, t, weight, ignore_index, *, probabilities_allowed):
    """PyTorch's own checks of ``(input, target, weight)`` (``t``: the target as an array),
    raised with its wording (and xent's detail after it) before xent's validation runs."""
    t_shape, t_dtype = t.shape, t.dtype
    dim = _class_dim(pred)
    c = pred.shape[dim]
    if weight is not None:
        w_shape = np.shape(weight)
        if w_shape != (c,):
            raise TorchInputError(
                f"weight tensor should be defined either for all {c} classes or no classes but "
                f"got weight tensor of shape: {list(w_shape)}"
            )
    floating = _is_float(t_dtype)
    if probabilities_allowed and t_shape == pred.shape and pred.ndim > 0:
        if not floating:
            raise _TorchDtypeError(
                f"Expected floating point type for target with class probabilities, got "
                f"{_torch_dtype(t_dtype)} (target has input's shape {pred.shape}: class "
                f"probabilities must be floating point; class indices have shape "
                f"{pred.shape[:dim] + pred.shape[dim + 1 :]})"
            )
        if ignore_index != -100:
            raise TorchInputError(
                f"ignore_index is not supported for floating point target (got "
                f"ignore_index={ignore_index!r} with class probabilities)"
            )
        return
    if floating or t_dtype.kind not in "iub":
        raise _TorchDtypeError(
            f"expected target dtype to be Long or Byte, but got {_torch_dtype(t_dtype)} (a "
            f"target of shape {t_shape}, not input's shape {pred.shape}, holds class indices)"
        )
    batch = pred.shape[:dim] + pred.shape[dim + 1 :]
    if pred.ndim <= 2 and len(t_shape) > 1 and t_shape != batch + (1,):
        raise TorchInputError(
            f"0D or 1D target tensor expected, multi-target not supported (input {pred.shape}, "
            f"target {t_shape})"
        )
    if pred.ndim == 2 and len(t_shape) == 1 and t_shape[0] != pred.shape[0]:
        raise TorchInputError(
            f"Expected input batch_size ({pred.shape[0]}) to match target batch_size "
            f"({t_shape[0]}). (input {pred.shape}, target {t_shape})"
        )
    if pred.ndim > 2 and t_shape != batch and len(t_shape) == len(batch):
        raise TorchInputError(
            f"Expected target size {list(batch)}, got {list(t_shape)} (input {pred.shape})"
        )


def _wants_grad(*tensors) -> bool:
    """Whether autograd must see this call: a torch tensor argument requires grad while
    gradients are enabled."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    return any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


def _check_weight_grad(weight, fn: str) -> None:
    """A class-weight tensor that requires grad: PyTorch's refusal (index targets), which
    xent gives for probability targets too rather than silently dropping the gradient."""
    if _wants_grad(weight):
        raise TorchInputError(
            f"The function '{fn}' is not differentiable with respect to argument 'weight'. "
            f"This input cannot have requires_grad True. (xent computes no gradient for "
            f"class weights; pass weight.detach())"
        )


def _class_dim(pred: np.ndarray, name: str = "input") -> int:
    """PyTorch's class dimension: 0 for an unbatched ``(C,)`` input, else 1."""
    if pred.ndim == 0:
        raise ValueError(f"{name} must have shape (C,), (N, C) or (N, C, d1, ...), got a scalar")
    return 0 if pred.ndim == 1 else 1


@returns_like_inputs
def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    *,
    z_loss=0.0,
    softcap=None,
    return_lse=False,
    return_z_loss=False,
    inplace_backward=False,
):
    r"""Cross-entropy from logits with ``torch.nn.functional.cross_entropy``'s semantics.

    For class-index targets ``y`` (integers, the input's shape without dim 1), with
    :math:`\mathrm{lse} = \log\sum_c e^{z_c}` and class weights :math:`w` (all 1 by
    default):

    .. math::

        \ell_i = (1-\varepsilon)\, w_{y_i} (\mathrm{lse}_i - z_{i y_i})
                 + \frac{\varepsilon}{C} \sum_c w_c (\mathrm{lse}_i - z_{ic}),
        \qquad
        \text{mean} = \frac{\sum_i \ell_i}{\sum_{i \,\text{not ignored}} w_{y_i}}

    Elements whose target equals ``ignore_index`` give 0 and leave the denominator; if all
    are ignored, ``"mean"`` is NaN (PyTorch; Keras gives 0).  For class-probability targets
    ``t`` (floating point, the input's shape),
    :math:`\ell_i = -\sum_c w_c t'_{ic} \log \mathrm{softmax}(z_i)_c` with
    :math:`t' = (1-\varepsilon) t + \varepsilon / C`, and ``"mean"`` divides by the number
    of elements, not by a sum of weights (PyTorch's rule, pytorch#107680).

    Gradients: given a torch tensor with ``requires_grad`` (gradients enabled), the result
    is differentiable: ``loss.backward()`` gives ``d loss / d input`` (and ``d loss /
    d target`` for class-probability targets that require grad) by xent's fused kernel;
    see :func:`value_and_grad` for the formula.

    Parameters
    ----------
    input : array_like of float, shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``
        Logits; classes on dim 1 (dim 0 when unbatched).  float16 is computed in float32.
    target : array_like
        Integer class indices of shape ``()``, ``(N,)`` or ``(N, d1, ..., dk)``, or float
        class probabilities of ``input``'s shape.  The dtype decides, as in PyTorch.
    weight : array_like of shape ``(C,)``, optional
        Per-class weights (finite).
    ignore_index : int, default -100
        Index targets equal to it give 0 and do not count (index targets only).
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns the per-element losses, of the targets' index shape.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon`.  Outside ``[0, 1]`` is a ``ValueError`` (PyTorch treats
        negative values as 0).
    z_loss : float >= 0, keyword-only
        Adds ``z_loss * lse**2`` per counted element; with ``"mean"`` that term is divided
        by the number of counted elements (not by the weights).
    softcap : float > 0 or None, keyword-only
        Compute the loss on ``softcap * tanh(input / softcap)``, inside the kernel.
    return_lse, return_z_loss : bool, keyword-only
        Also return the per-element log-sum-exp (shape of the index targets, never
        reduced) and/or the z-loss term (reduced like the loss, which includes it):
        ``(loss, z_loss, lse)`` in that order, each only when asked for.
    inplace_backward : bool, keyword-only
        For an input tensor that requires grad (and is not a leaf): write the gradient over
        the input's memory during the forward pass, as the fused GPU losses do (no second
        ``N x C`` tensor; the logits are gone afterwards, and autograd raises if another
        operation saved them).

    Returns
    -------
    ndarray or numpy scalar
        The input's float dtype (float32 for float16).

    Raises
    ------
    ValueError
        Index targets outside ``[0, C)`` other than ``ignore_index`` (the message names the
        value and its position), shape mismatches, bad ``reduction``, ``weight`` not of
        shape ``(C,)``, ``label_smoothing`` outside ``[0, 1]``.
    TypeError
        Non-float input, non-numeric targets.

    See Also
    --------
    nll_loss : the same loss from log-probabilities.
    sparse_categorical_crossentropy, categorical_crossentropy : Keras semantics.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[1, 2, 3], [0, 0, 0], [2, -1, .5], [.3, .2, .1]])
    >>> target = np.array([2, 0, 1, -100])
    >>> xent.cross_entropy(logits, target, reduction="none")
    array([0.40760596, 1.09861229, 3.2413113 , 0.        ])
    >>> round(float(xent.cross_entropy(logits, target)), 7)
    1.5825098
    >>> round(float(xent.cross_entropy(logits, target, weight=[1, 2, 3])), 7)
    1.4673421
    >>> round(float(xent.cross_entropy(logits, target, weight=[1, 2, 3], label_smoothing=0.1)), 7)
    1.4594145
    """
    reduction = _check_reduction(reduction)
    smoothing = check_smoothing(label_smoothing)
    ignore_index = check_ignore_class(ignore_index, "ignore_index")
    opts = check_large_vocab(z_loss, softcap, return_lse, return_z_loss)
    _check_weight_grad(weight, "cross_entropy")
    if _wants_grad(input, target):
        from xent import _torch_autograd

        p = _Prepared(input, target, weight, ignore_index, smoothing, opts)
        return _torch_autograd.cross_entropy(
            input, target, p, reduction, opts, bool(inplace_backward)
        )
    if inplace_backward:
        raise ValueError(
            "inplace_backward=True applies to a torch tensor input that requires grad (with "
            "gradients enabled); for NumPy arrays use xent.value_and_grad(..., inplace=True)"
        )
    if _dask.is_dask(input) or _dask.is_dask(target):
        if opts.extra_outputs:
            raise ValueError("return_lse / return_z_loss are not available for dask inputs")
        return _dask_cross_entropy(input, target, weight, ignore_index, reduction, smoothing, opts)
    parts = _cross_entropy_parts(input, target, weight, ignore_index, smoothing, opts)
    loss, z, lse, batch_shape = parts.loss, parts.z, parts.lse, parts.batch_shape
    lse_out = None if lse is None else lse.reshape(batch_shape)
    if reduction == "none":
        total = loss.reshape(batch_shape) if z is None else (loss + z).reshape(batch_shape)
        z_out = None if z is None else z.reshape(batch_shape)
        return package(total, z_out, lse_out, opts)
    rule = TorchReduction(reduction)
    sums = parts.partials()
    z_out = None if z is None else rule.combine(sums, loss.dtype, z_only=True)
    return package(rule.combine(sums, loss.dtype), z_out, lse_out, opts)


class _Parts:
    """One block's per-element results and what PyTorch's ``"mean"`` divides by."""

    def __init__(self, loss, z, lse, divisor, count, batch_shape, total=None):
        self.loss, self.z, self.lse = loss, z, lse
        self.divisor, self.count, self.batch_shape = divisor, count, batch_shape
        self.total = total  # the losses' float64 sum if the kernel took it

    def partials(self):
        return TorchReduction.partials(self.loss, self.divisor, self.z, self.count, self.total)


def _index_targets(target, batch_shape, n_classes, dim, ignore_index, range_check=True):
    """PyTorch's integer class-index ``target`` as ``_inputs.as_labels`` reads it, named as
    PyTorch names the arguments."""
    return as_labels(
        target,
        batch_shape,
        n_classes,
        axis=dim,
        ignore_class=ignore_index,
        name="target",
        pred_name="input",
        ignore_name="ignore_index",
        integer_only=True,
        range_check=range_check,
    )


class _Prepared:
    """A validated :func:`cross_entropy` call as the engine takes it: ``kind`` ("sparse" or
    "dense"), ``rows`` / ``second`` (labels or target rows), the engine's options, ``counted``
    (flat bool per row, or ``None`` for all), PyTorch's ``"mean"`` divisor, the number of
    counted elements, the batch shape, the class dimension and the input as an array.

    ``range_check=False`` leaves the range of index targets without class weights to the
    kernel pass: the caller runs :meth:`check_counted` on the count it returns."""

    def __init__(self, input, target, weight, ignore_index, smoothing, opts, range_check=True):
        pred = as_predictions(input, "input")
        dim = _class_dim(pred)
        rows, batch_shape = to_rows(pred, dim, name="input")
        n_classes = rows.shape[1]
        t = as_array(target, "target")
        _check_like_torch(pred, t, weight, ignore_index, probabilities_allowed=True)
        w = as_class_weights(weight, n_classes)
        self.options = opts.row_options(smoothing=smoothing, class_weights=w)
        self.pred, self.dim, self.rows, self.batch_shape = pred, dim, rows, batch_shape
        if _is_float(t.dtype):  # class probabilities
            if t.shape != pred.shape:
                raise ValueError(
                    f"target is floating point, so it holds class probabilities and needs "
                    f"input's shape {pred.shape}, got {t.shape}; class indices must be integers"
                )
            self.kind = "dense"
            self.second, _ = to_rows(
                as_targets(t, pred.shape, name="target", pred_name="input"), dim, name="target"
            )
            self.counted = None
            self.divisor = self.count = rows.shape[0]
            return

        def read_labels(checked):
            return _index_targets(t, batch_shape, n_classes, dim, ignore_index, checked)

        # class weights are looked up by label below: those labels are checked first
        labels, valid = read_labels(range_check or w is not None)
        self._read_labels, self._valid = read_labels, valid
        self.kind, self.second = "sparse", labels
        self.counted = None if valid is None else valid.reshape(-1)
        n = rows.shape[0]
        self.count = n if self.counted is None else int(np.count_nonzero(self.counted))
        if w is None:
            self.divisor = self.count
        else:
            self.divisor = np.sum(w[labels[labels != _engine.IGNORED]], dtype=np.float64)

    def check_counted(self, outside: int) -> None:
        """Raise the range check's ``ValueError`` if a kernel pass counted more labels outside
        the classes than are ignored (``_inputs.check_counted_labels``)."""
        check_counted_labels(outside, self._valid, lambda: self._read_labels(True))


def _cross_entropy_parts(input, target, weight, ignore_index, smoothing, opts) -> _Parts:
    """Per-element losses (without the z-loss), z-loss terms, lse and the denominators."""
    p = _Prepared(input, target, weight, ignore_index, smoothing, opts, range_check=False)
    if p.kind == "dense":
        got = _engine.dense_losses(p.rows, p.second, p.options)
    else:
        got = _engine.sparse_losses(p.rows, p.second, p.options)
        p.check_counted(got.outside)
    z = z_terms(got.lse, opts, p.counted)
    return _Parts(got.loss, z, got.lse, p.divisor, p.count, p.batch_shape, got.total)


def _dask_cross_entropy(input, target, weight, ignore_index, reduction, smoothing, opts):
    """:func:`cross_entropy` on dask arrays of shape ``(N, C)``: per-element losses block by
    block, or the same partials as in memory added over blocks and combined once."""
    if len(input.shape) != 2:
        raise ValueError("dask inputs to cross_entropy must have shape (N, C)")
    kind = "dense" if _is_float(np.dtype(getattr(target, "dtype", np.int64))) else "sparse"
    dtype = _dask.result_dtype(input)

    def parts(y, p):
        return _cross_entropy_parts(p, y, weight, ignore_index, smoothing, opts)

    if reduction == "none":

        def per_element(y, p):
            got = parts(y, p)
            return got.loss if got.z is None else got.loss + got.z

        return _dask.per_sample(per_element, target, input, axis=1, kind=kind, dtype=dtype)
    rule = TorchReduction(reduction)
    return _dask.reduced(
        lambda y, p: parts(y, p).partials(),
        target,
        input,
        axis=1,
        kind=kind,
        n_parts=rule.n_parts,
        combine=lambda s: rule.combine(s, dtype),
        dtype=dtype,
    )


@returns_like_inputs
def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    r"""Negative log-likelihood from log-probabilities (``torch.nn.functional.nll_loss``).

    .. math::

        \ell_i = -w_{y_i}\, x_{i y_i}, \qquad
        \text{mean} = \frac{\sum_i \ell_i}{\sum_{i \,\text{not ignored}} w_{y_i}}

    One element per row is read (a gather); ``input`` is taken as given (PyTorch does not
    check that it holds log-probabilities either).

    Parameters
    ----------
    input : array_like of float, shape ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``
        Log-probabilities, classes on dim 1 (dim 0 when unbatched).
    target : array_like of int, shape ``()``, ``(N,)`` or ``(N, d1, ..., dk)``
        Class indices in ``[0, C)`` or ``ignore_index``.
    weight : array_like of shape ``(C,)``, optional
        Per-class weights.
    ignore_index : int, default -100
        Targets equal to it give 0 and leave the denominator (all ignored: ``"mean"`` is NaN).
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    ndarray or numpy scalar
        The input's float dtype.

    See Also
    --------
    cross_entropy : the same loss from logits (log-softmax fused in).

    Examples
    --------
    >>> import numpy as np, xent
    >>> log_probs = np.log([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    >>> xent.nll_loss(log_probs, [1, 2], reduction="none")
    array([0.69314718, 0.22314355])
    >>> round(float(xent.nll_loss(log_probs, [1, -100])), 7)
    0.6931472
    """
    reduction = _check_reduction(reduction)
    ignore_index = check_ignore_class(ignore_index, "ignore_index")
    _check_weight_grad(weight, "nll_loss")
    if _dask.is_dask(input) or _dask.is_dask(target):
        return _dask_nll_loss(input, target, weight, ignore_index, reduction)
    loss, divisor, batch_shape, labels, w, dim = _nll_parts(input, target, weight, ignore_index)
    if _wants_grad(input):
        from xent import _torch_autograd

        if reduction != "none":
            rule = TorchReduction(reduction)
            loss_out = rule.combine(rule.partials(loss, divisor, None, 0), loss.dtype)
        else:
            loss_out = loss.reshape(batch_shape)
        return _torch_autograd.NLLFunction.apply(
            input, loss_out, labels, w, divisor, batch_shape, dim, reduction
        )
    if reduction == "none":
        return loss.reshape(batch_shape)
    rule = TorchReduction(reduction)
    return rule.combine(rule.partials(loss, divisor, None, 0), loss.dtype)


def _nll_parts(input, target, weight, ignore_index):
    """Per-element ``-w_y x_y`` (0 where ignored), the ``"mean"`` divisor, the batch shape,
    the labels, the class weights and the class dimension."""
    pred = as_predictions(input, "input")
    dim = _class_dim(pred)
    rows, batch_shape = to_rows(pred, dim, name="input")
    n_classes = rows.shape[1]
    target = as_array(target, "target")
    _check_like_torch(pred, target, weight, ignore_index, probabilities_allowed=False)
    w = as_class_weights(weight, n_classes)
    labels, _ = _index_targets(target, batch_shape, n_classes, dim, ignore_index)
    keep = labels != _engine.IGNORED
    safe = np.where(keep, labels, 0)
    picked = as_float64(rows[np.arange(rows.shape[0]), safe])
    scale = np.ones(labels.shape) if w is None else w[safe]
    loss = np.where(keep, -scale * picked, 0.0).astype(_engine.result_dtype(rows.dtype))
    divisor = np.sum(np.where(keep, scale, 0.0), dtype=np.float64)
    return loss, divisor, batch_shape, labels, w, dim


def _dask_nll_loss(input, target, weight, ignore_index, reduction):
    """:func:`nll_loss` on dask arrays of shape ``(N, C)``, as :func:`_dask_cross_entropy`."""
    if len(input.shape) != 2:
        raise ValueError("dask inputs to nll_loss must have shape (N, C)")
    dtype = _dask.result_dtype(input)
    if reduction == "none":
        return _dask.per_sample(
            lambda y, p: _nll_parts(p, y, weight, ignore_index)[0],
            target,
            input,
            axis=1,
            kind="sparse",
            dtype=dtype,
        )
    rule = TorchReduction(reduction)

    def block(y, p):
        loss, divisor = _nll_parts(p, y, weight, ignore_index)[:2]
        return rule.partials(loss, divisor, None, 0)

    return _dask.reduced(
        block,
        target,
        input,
        axis=1,
        kind="sparse",
        n_parts=rule.n_parts,
        combine=lambda s: rule.combine(s, dtype),
        dtype=dtype,
    )


@returns_like_inputs
def value_and_grad(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    *,
    z_loss=0.0,
    softcap=None,
    inplace=False,
):
    r""":func:`cross_entropy` and its gradient with respect to ``input``, in one fused pass.

    With :math:`p = \mathrm{softmax}(u)` of the (soft-capped) logits and :math:`q` the
    row's effective target (:math:`w_y (1-\varepsilon)` at the label plus
    :math:`\varepsilon w / C`, or :math:`w ((1-\varepsilon) t + \varepsilon / C)` for
    probability targets), each counted row's loss has the gradient

    .. math::

        \frac{\partial \ell_i}{\partial u_{ij}} = \Big(\sum_c q_{ic}\Big) p_{ij} - q_{ij}
            + 2 s\, \mathrm{lse}_i\, p_{ij},
        \qquad \frac{\partial u}{\partial z} = 1 - (u / \mathrm{softcap})^2

    (the last term only with ``z_loss=s``), scaled by the reduction: ``"mean"`` divides by
    PyTorch's denominator (the z-loss term by the number of counted elements), ``"sum"``
    by 1; ``"none"`` differentiates the sum of the per-element losses.  Ignored elements
    get zero gradient rows; a ``-inf`` logit with zero target gets 0, never NaN.

    Parameters
    ----------
    input, target, weight, ignore_index, reduction, label_smoothing, z_loss, softcap
        As :func:`cross_entropy` (``return_lse`` / ``return_z_loss`` are not offered here).
    inplace : bool, default False
        Write the gradient over ``input`` (a writable NumPy array or CPU tensor) and return
        it: no second ``N x C`` array, the logits are gone afterwards.

    Returns
    -------
    loss : ndarray or numpy scalar
        As :func:`cross_entropy` returns it (float32 for 16-bit input).
    grad : ndarray of ``input``'s shape and dtype
        ``d loss / d input``; for float16/bfloat16 input computed in float32 and rounded.
        A torch tensor in gives torch tensors out, a JAX array JAX arrays.

    Examples
    --------
    >>> import numpy as np, xent
    >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> loss, grad = xent.value_and_grad(logits, [0, 2])
    >>> round(float(loss), 6)
    0.669079
    >>> grad.round(4)
    array([[-0.1065,  0.0533,  0.0533],
           [ 0.1667,  0.1667, -0.3333]])
    """
    reduction = _check_reduction(reduction)
    smoothing = check_smoothing(label_smoothing)
    ignore_index = check_ignore_class(ignore_index, "ignore_index")
    opts = check_large_vocab(z_loss, softcap, False, False)
    p = _Prepared(input, target, weight, ignore_index, smoothing, opts)
    if inplace:
        out_rows = inplace_rows(p, input)
        loss, _, _ = forward_backward(p, reduction, opts, 1.0, out_rows)
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(input, torch.Tensor):
            torch.autograd.graph.increment_version(input)  # autograd sees the write
        return loss, input
    grad, g_rows = empty_grad(p.rows, p.batch_shape, p.dim)
    loss, _, _ = forward_backward(p, reduction, opts, 1.0, g_rows)
    if isinstance(input, np.ndarray) and input.dtype.itemsize == 2 and input.dtype.kind == "V":
        grad = grad.view(input.dtype)  # ml_dtypes.bfloat16 in, ml_dtypes.bfloat16 out
    return loss, grad
