"""Helpers of the gradient of the logits losses (``xent.value_and_grad``, the PyTorch autograd
Function, the JAX custom VJP): one fused pass computes the loss and writes ``d loss / d input``.

Every reduction is a per-row coefficient of the row's loss (``g_loss``) and of its
``lse**2`` (``g_zsq``, the z-loss), which the kernel turns into ``a p - b`` per row
(``kernels/grad.py``): ``"mean"`` is ``1 / divisor`` on counted rows (the z-loss
``1 / count``), ``"sum"`` is 1, ``"none"`` is the upstream gradient of each element.
The PyTorch autograd Function and the JAX custom VJP use the same pass.  ``p`` below is a
validated call, ``_torch_api._Prepared`` (not imported: that module imports this one).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

from xent import _engine
from xent._frameworks import to_numpy
from xent._reduce import TorchReduction
from xent._vocab import package, z_terms


def row_coefficients(p, reduction: str, z_loss: float, grad_output=1.0):
    """``(g_loss, g_zsq)`` float64 per row for the reduction's scaling of an upstream
    gradient (a scalar, or of the batch shape for ``"none"``); 0 on ignored rows."""
    n = p.rows.shape[0]
    if reduction == "none":
        go = np.broadcast_to(np.asarray(grad_output, np.float64), p.batch_shape).reshape(-1)
        g_loss, g_z = go.copy(), go
    else:
        go = float(np.asarray(grad_output, np.float64))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = go / np.float64(p.divisor) if reduction == "mean" else go
            z_scale = go / np.float64(p.count) if reduction == "mean" else go
        g_loss, g_z = np.full(n, scale), np.full(n, z_scale)
    g_zsq = z_loss * g_z if z_loss else np.zeros(n)
    if p.counted is not None:
        g_loss = np.where(p.counted, g_loss, 0.0)
        g_zsq = np.where(p.counted, g_zsq, 0.0)
    return g_loss, g_zsq


class _GradientMemory:
    """Memory for gradients, reused once nobody holds the gradient it last carried.

    A fresh gradient of 400 MB costs the operating system 17-60 ms of page faults (measured,
    AMD EPYC under KVM: as much as the fused pass itself), paid again every step of a training
    loop that drops its ``.grad`` before the next one.  Gradients of at least ``SMALLEST``
    bytes are therefore carved from at most ``KEEP`` buffers, which are handed out again only
    when their reference count shows that no array, tensor or view still uses them; so
    nothing a caller holds is ever overwritten.  At most ``KEEP`` such buffers stay allocated
    between calls (the memory the next step of the same shape needs anyway).
    """

    SMALLEST = 1 << 20
    KEEP = 2
    #: ``sys.getrefcount`` of a buffer that only this pool refers to, in :meth:`_is_free`
    #: (the list and getrefcount's own argument)
    _FREE = 2

    def __init__(self):
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()

    def empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        if nbytes < self.SMALLEST:
            return np.empty(shape, dtype)
        with self._lock:
            found = None
            for k in range(len(self._buffers)):  # (enumerate's tuple would add a reference)
                if self._is_free(k) and self._buffers[k].nbytes == nbytes:
                    found = self._buffers.pop(k)  # to the end: most recently used last
                    break
            if found is None:
                found = np.empty(nbytes, np.uint8)
            self._buffers.append(found)
            self._evict()
            return found.view(dtype).reshape(shape)

    def _evict(self):
        """Drop the oldest buffers nobody uses beyond ``KEEP`` (used ones are the caller's)."""
        while len(self._buffers) > self.KEEP:
            free = [k for k in range(len(self._buffers)) if self._is_free(k)]
            if not free:
                return
            del self._buffers[free[0]]

    def _is_free(self, k: int) -> bool:
        """Whether only the pool refers to buffer ``k`` (no array, view or tensor uses it)."""
        return sys.getrefcount(self._buffers[k]) == self._FREE


_MEMORY = _GradientMemory()


def empty_grad(rows, batch_shape, dim) -> tuple[np.ndarray, np.ndarray]:
    """``(grad, grad_rows)``: a new gradient of the input's shape (``batch_shape`` with the
    classes at ``dim``) and ``rows``' dtype, and the ``(N, C)`` view of it the kernel writes
    (classes last in memory, so that the view always exists)."""
    c = rows.shape[1]
    g_rows = _MEMORY.empty(rows.shape, rows.dtype)
    grad = np.moveaxis(g_rows.reshape(tuple(batch_shape) + (c,)), -1, dim)
    return grad, g_rows


def inplace_rows(p, given) -> np.ndarray:
    """The ``(N, C)`` rows of the caller's own input, to overwrite with the gradient; a
    ``ValueError`` when the input is not memory xent can write (a list, a copy, read-only)."""
    arr = to_numpy(given, "input")
    if not (
        isinstance(arr, np.ndarray)
        and arr.flags.writeable
        and np.shares_memory(p.rows, arr)
        and p.rows.dtype == arr.dtype
    ):
        raise ValueError(
            "inplace=True overwrites input with the gradient, so input must be a writable "
            "float array (or tensor) whose classes can be viewed as rows without a copy; got "
            f"{type(given).__name__} of shape {np.shape(given)}"
        )
    return p.rows


def forward_backward(p, reduction, opts, grad_output=1.0, out_rows=None):
    """The loss, reduced as asked (with the outputs ``package`` makes), and the gradient rows
    for an upstream ``grad_output``.  Returns ``(outputs, lse, grad_rows)``."""
    g_loss, g_zsq = row_coefficients(p, reduction, opts.z_loss, grad_output)
    loss, lse, g_rows = _engine.grad_rows(
        p.kind, p.rows, p.second, p.options, g_loss, g_zsq, out=out_rows
    )
    z = z_terms(lse, opts, p.counted) if (opts.z_loss or opts.return_z_loss) else None
    shape = p.batch_shape
    lse_out = lse.reshape(shape) if opts.return_lse else None
    if reduction == "none":
        total = loss.reshape(shape) if not opts.z_loss else (loss + z).reshape(shape)
        return package(total, None if z is None else z.reshape(shape), lse_out, opts), lse, g_rows
    rule = TorchReduction(reduction)
    sums = TorchReduction.partials(loss, p.divisor, z, p.count)
    z_out = None if z is None else rule.combine(sums, loss.dtype, z_only=True)
    return package(rule.combine(sums, loss.dtype), z_out, lse_out, opts), lse, g_rows
