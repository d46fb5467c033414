"""PyTorch autograd for :func:`xent.cross_entropy` and :func:`xent.nll_loss`.

``"mean"`` and ``"sum"``: the forward pass is the fused kernel, which writes the gradient
for an upstream gradient of 1 while it computes the loss (the logits are read once for
both); ``backward`` returns it, multiplied by the upstream gradient when that is not 1.
``"none"``: the forward pass keeps each row's log-sum-exp, and ``backward`` runs the
gradient kernel with the upstream gradient of every element (one read of the logits, one
write).  ``inplace_backward=True`` writes the gradient over the logits' memory (no second
``N x C`` tensor; the logits are gone afterwards), as the fused GPU losses do.

Imported only when a tensor that requires grad reaches a front end: torch is imported by
then.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from xent import _engine
from xent._frameworks import is_bfloat16
from xent._grad import empty_grad, forward_backward, inplace_rows, row_coefficients
from xent._vocab import package, z_terms


def _tensor(arr: np.ndarray) -> torch.Tensor:
    """A NumPy array (any strides, bfloat16 as its record view) as a tensor, no copy."""
    if is_bfloat16(arr.dtype):
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


def _tensors(out):
    if isinstance(out, tuple):
        return tuple(_tensors(o) for o in out)
    return torch.from_numpy(np.asarray(out))


def _check_inplace(input, opts, target_grad):
    if input.is_leaf:
        raise ValueError(
            "inplace_backward=True writes the gradient over input, which is a leaf tensor "
            "(its .grad would share its memory); use it for logits computed by an operation "
            "(such as a model's output layer)"
        )
    if opts.extra_outputs or target_grad:
        raise ValueError(
            "inplace_backward=True overwrites the logits, which return_lse / return_z_loss "
            "and a target that requires grad still need; turn one of them off"
        )


def _unsqueeze_classes(go: torch.Tensor, dim: int) -> torch.Tensor:
    return go.unsqueeze(dim) if go.dim() > 0 or dim == 0 else go


class CrossEntropyFunction(torch.autograd.Function):
    """``cross_entropy`` as an autograd Function (see the module docstring)."""

    @staticmethod
    def forward(ctx, input, target, p, reduction, opts, inplace):
        ctx.set_materialize_grads(False)
        target_grad = isinstance(target, torch.Tensor) and target.requires_grad
        if inplace:
            _check_inplace(input, opts, target_grad)
        ctx.p, ctx.reduction, ctx.opts, ctx.inplace = p, reduction, opts, inplace
        ctx.target_grad = target_grad
        if reduction == "none" and not inplace:
            # the upstream gradient of each element is needed: compute it in backward
            rows_fn = _engine.dense_rows if p.kind == "dense" else _engine.sparse_rows
            options = dataclasses.replace(p.options, want_lse=True)
            loss, lse64 = rows_fn(p.rows, p.second, options, lse64=True)
            lse = lse64.astype(loss.dtype, copy=False)
            z = z_terms(lse, opts, p.counted)
            shape = p.batch_shape
            total = loss if not opts.z_loss else loss + z
            out = package(
                total.reshape(shape),
                None if z is None else z.reshape(shape),
                lse.reshape(shape) if opts.return_lse else None,
                opts,
            )
            ctx.lse, ctx.grad, ctx.fused = lse64, None, False  # float64 for the backward
        else:
            if inplace:
                out_rows, grad = inplace_rows(p, input), input
            else:
                g, out_rows = empty_grad(p.rows, p.batch_shape, p.dim)
                grad = _tensor(g)
            # for "none" (in place) the gradient of the elements' sum, scaled row by row later
            out, lse, _ = forward_backward(p, reduction, opts, 1.0, out_rows)
            ctx.lse, ctx.grad, ctx.fused = lse, grad, True
            if inplace:
                torch.autograd.graph.increment_version(input)
        ctx.save_for_backward(input if not inplace else None, target if target_grad else None)
        return _tensors(out)

    @staticmethod
    def backward(ctx, *grads):
        p, opts = ctx.p, ctx.opts
        go = grads[0]
        extra = list(grads[1:])
        g_z_out = extra.pop(0) if opts.return_z_loss else None
        g_lse_out = extra.pop(0) if opts.return_lse else None
        grad_input = None
        if ctx.needs_input_grad[0]:
            if ctx.fused and go is not None:  # computed for an upstream gradient of 1
                # handed over, not kept: autograd can then make it the leaf's .grad without
                # a copy (measured: the copy cost as much as the fused pass itself)
                grad_input, ctx.grad = ctx.grad, None
                if grad_input is None:  # a second backward (retain_graph): the same pass again
                    if ctx.inplace:
                        raise RuntimeError(
                            "inplace_backward=True: the gradient written over the logits went "
                            "to the first backward; a second backward (retain_graph=True) "
                            "needs inplace_backward=False"
                        )
                    g, out_rows = empty_grad(p.rows, p.batch_shape, p.dim)
                    forward_backward(p, ctx.reduction, opts, 1.0, out_rows)
                    grad_input = _tensor(g)
                if ctx.reduction == "none":
                    go = _unsqueeze_classes(go, p.dim)
                if not (go.dim() == 0 and float(go) == 1.0):
                    grad_input = grad_input.mul_(go.to(grad_input.dtype))
            elif go is not None:  # "none": the gradient kernel from the saved lse
                grad_input = _backward_pass(p, ctx.reduction, opts, go, None, None, ctx.lse)
            if g_z_out is not None or g_lse_out is not None:
                more = _backward_pass(p, ctx.reduction, opts, None, g_z_out, g_lse_out, ctx.lse)
                grad_input = more if grad_input is None else grad_input + more
        grad_target = None
        if ctx.target_grad and go is not None:
            grad_target = _target_grad(p, ctx.reduction, opts, go, ctx.lse)
        return grad_input, grad_target, None, None, None, None


def _backward_pass(p, reduction, opts, go, g_z_out, g_lse_out, lse):
    """The gradient kernel from the saved log-sum-exp, for the upstream gradients of the
    loss (``go``), of the returned z-loss term and of the returned log-sum-exp."""
    n = p.rows.shape[0]
    if go is not None:
        g_loss, g_zsq = row_coefficients(p, reduction, opts.z_loss, go.detach().double().numpy())
    else:
        g_loss, g_zsq = np.zeros(n), np.zeros(n)
    if g_z_out is not None:  # the z-loss output is reduced as the loss is
        _, g_z = row_coefficients(p, reduction, opts.z_loss, g_z_out.detach().double().numpy())
        g_zsq = g_zsq + g_z
    g_lse = None
    if g_lse_out is not None:
        g_lse = np.broadcast_to(g_lse_out.detach().double().numpy(), p.batch_shape).reshape(-1)
    g, out_rows = empty_grad(p.rows, p.batch_shape, p.dim)
    _engine.grad_rows(
        p.kind, p.rows, p.second, p.options, g_loss, g_zsq, g_lse=g_lse, lse=lse, out=out_rows
    )
    return _tensor(g)


def _target_grad(p, reduction, opts, go, lse):
    """``d loss / d target`` for class-probability targets: ``(1 - eps) w_j (lse - u_j)``
    per element, scaled as the loss (NumPy, O(N C) temporaries: a rare need)."""
    g_loss, _ = row_coefficients(p, reduction, 0.0, go.detach().double().numpy())
    u = np.asarray(p.rows, np.float64) if not is_bfloat16(p.rows.dtype) else _widen_bf16(p.rows)
    if opts.softcap:
        u = opts.softcap * np.tanh(u / opts.softcap)
    w = p.options.class_weights
    scale = (1.0 - p.options.smoothing) * (1.0 if w is None else w)
    with np.errstate(invalid="ignore"):
        rows = g_loss[:, None] * scale * (np.asarray(lse, np.float64)[:, None] - u)
    c = rows.shape[1]
    grad = np.moveaxis(rows.reshape(tuple(p.batch_shape) + (c,)), -1, p.dim)
    t_dtype = p.second.dtype
    if is_bfloat16(t_dtype):
        return torch.from_numpy(np.ascontiguousarray(grad)).to(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(grad).astype(t_dtype))


def _widen_bf16(rows):
    return (rows.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def cross_entropy(input, target, p, reduction, opts, inplace):
    """The autograd path of :func:`xent.cross_entropy` (validated arguments)."""
    return CrossEntropyFunction.apply(input, target, p, reduction, opts, inplace)


class NLLFunction(torch.autograd.Function):
    """``nll_loss`` as an autograd Function: the gradient is ``-w_y`` (scaled) at each label."""

    @staticmethod
    def forward(ctx, input, loss, labels, w, divisor, batch_shape, dim, reduction):
        ctx.labels, ctx.w, ctx.divisor = labels, w, divisor
        ctx.batch_shape, ctx.dim, ctx.reduction = batch_shape, dim, reduction
        ctx.shape, ctx.dtype = tuple(input.shape), input.dtype
        return torch.from_numpy(np.asarray(loss))

    @staticmethod
    def backward(ctx, go):
        labels = ctx.labels
        keep = labels != _engine.IGNORED
        safe = np.where(keep, labels, 0)
        g = go.detach().double().numpy()
        if ctx.reduction == "none":
            coef = np.broadcast_to(g, ctx.batch_shape).reshape(-1)
        elif ctx.reduction == "mean":
            with np.errstate(divide="ignore", invalid="ignore"):
                coef = np.full(labels.shape, float(g) / ctx.divisor)
        else:
            coef = np.full(labels.shape, float(g))
        scale = np.ones(labels.shape) if ctx.w is None else ctx.w[safe]
        c = ctx.shape[ctx.dim]
        rows = np.zeros((labels.shape[0], c))
        rows[np.arange(labels.shape[0])[keep], safe[keep]] = -(coef * scale)[keep]
        grad = np.moveaxis(rows.reshape(tuple(ctx.batch_shape) + (c,)), -1, ctx.dim)
        return (torch.from_numpy(np.ascontiguousarray(grad)).to(ctx.dtype),) + (None,) * 7
