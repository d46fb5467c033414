"""``torch.nn`` modules backed by xent: :class:`CrossEntropyLoss` and :class:`NLLLoss`.

Drop-in replacements for ``torch.nn.CrossEntropyLoss`` / ``torch.nn.NLLLoss`` (same
constructor, same ``forward(input, target)``, differentiable), computed by xent's kernels on
the CPU.  Importing this module imports torch.
"""

from __future__ import annotations

import warnings

import torch

from xent._torch_api import cross_entropy, nll_loss

__all__ = ["CrossEntropyLoss", "NLLLoss"]


def _legacy_reduction(size_average, reduce, reduction: str) -> str:
    """PyTorch's rule for the deprecated ``size_average`` / ``reduce`` arguments."""
    if size_average is None and reduce is None:
        return reduction
    warnings.warn(
        "size_average and reduce args will be deprecated, please use reduction='"
        + ("none" if reduce is False else "sum" if size_average is False else "mean")
        + "' instead.",
        UserWarning,
        stacklevel=4,  # the caller of the loss class
    )
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class _WeightedLoss(torch.nn.Module):
    def __init__(self, weight, size_average, reduce, reduction):
        super().__init__()
        self.reduction = _legacy_reduction(size_average, reduce, reduction)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    r"""``torch.nn.CrossEntropyLoss`` computed by :func:`xent.cross_entropy`.

    .. math::

        \ell_i = (1-\varepsilon)\, w_{y_i} (\mathrm{lse}_i - z_{i y_i})
                 + \frac{\varepsilon}{C} \sum_c w_c (\mathrm{lse}_i - z_{ic})

    reduced as PyTorch does (see :func:`xent.cross_entropy`, which also gives the
    probability-target form).  ``loss.backward()`` runs xent's fused gradient.

    Parameters
    ----------
    weight, size_average, ignore_index, reduce, reduction, label_smoothing
        As ``torch.nn.CrossEntropyLoss`` (``size_average`` / ``reduce`` deprecated, as there).
    z_loss, softcap : keyword-only
        The large-vocabulary options of :func:`xent.cross_entropy`.
    inplace_backward : bool, keyword-only
        Write the gradient over the logits during the forward pass (logits produced by an
        operation, not a leaf; saves one ``N x C`` tensor).

    Shapes: input ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``; target ``()``, ``(N,)``,
    ``(N, d1, ...)`` of class indices, or class probabilities of the input's shape.

    Examples
    --------
    >>> import torch, xent.torch
    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> loss = xent.torch.CrossEntropyLoss()(logits, torch.tensor([0, 2]))
    >>> loss.backward()
    >>> round(loss.item(), 5), logits.grad[0].round(decimals=4).tolist()
    (0.66908, [-0.1065, 0.0533, 0.0533])
    """

    def __init__(
        self,
        weight=None,
        size_average=None,
        ignore_index=-100,
        reduce=None,
        reduction="mean",
        label_smoothing=0.0,
        *,
        z_loss=0.0,
        softcap=None,
        inplace_backward=False,
    ):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing
        self.z_loss, self.softcap, self.inplace_backward = z_loss, softcap, inplace_backward

    def forward(self, input, target):
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            softcap=self.softcap,
            inplace_backward=self.inplace_backward,
        )


class NLLLoss(_WeightedLoss):
    r"""``torch.nn.NLLLoss`` computed by :func:`xent.nll_loss`:
    :math:`\ell_i = -w_{y_i} x_{i y_i}`, ``"mean"`` divided by the counted weights.

    Parameters
    ----------
    weight, size_average, ignore_index, reduce, reduction
        As ``torch.nn.NLLLoss``.

    Examples
    --------
    >>> import torch, xent.torch
    >>> log_probs = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]]))
    >>> round(xent.torch.NLLLoss()(log_probs, torch.tensor([1, 2])).item(), 6)
    0.458145
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):  # fmt: skip
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return nll_loss(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
