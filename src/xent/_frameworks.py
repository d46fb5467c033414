"""Arrays from other frameworks in, results back in the caller's framework.

Inputs: NumPy arrays (also of ``ml_dtypes.bfloat16``, which JAX hands to NumPy), PyTorch CPU
tensors of any dtype (``requires_grad`` tensors are read through ``detach()``: no gradient
flows back through xent yet), JAX CPU arrays, and anything exposing ``__dlpack__``.  float32,
float64 and float16 tensors are read in place (no copy).  bfloat16 is widened to float32
exactly (the 16 bits become the high half of a float32): a float32 copy of the input, until the
kernels read bfloat16 themselves.  A tensor on another device is a ``ValueError`` that says so.

Outputs: a call given a torch tensor returns torch tensors, one given a JAX array returns JAX
arrays, NumPy in gives NumPy out.  For 16-bit inputs the loss is float32 (PyTorch and optax
return a bfloat16 loss, whose grid near 7 is 1/32: a deliberate difference).

Nothing here imports torch or JAX: they are looked up in ``sys.modules``, so they are only
ever touched when the caller has imported them already.
"""

from __future__ import annotations

import functools
import sys

import numpy as np


def _torch():
    return sys.modules.get("torch")


def _jax():
    return sys.modules.get("jax")


def is_bfloat16(dtype) -> bool:
    """Whether a NumPy dtype is ``ml_dtypes.bfloat16`` (a 2-byte ``V`` kind to NumPy)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values given as their 16-bit patterns (any integer view), widened exactly."""
    wide = bits.view(np.uint16).astype(np.uint32)
    wide <<= 16  # in place: one float32-sized array, not two
    return wide.view(np.float32)


def to_numpy(x, name: str):
    """``x`` as something ``np.asarray`` reads without copying where the layout allows
    (torch and JAX CPU data shared, not copied); anything else is returned unchanged."""
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type != "cpu":
            raise ValueError(
                f"{name} is a tensor on device {x.device}; xent computes on the CPU: pass "
                f"{name}.cpu() (a copy to host memory)"
            )
        x = x.detach().resolve_conj().resolve_neg()
        if x.dtype == torch.bfloat16:
            return bfloat16_bits_to_float32(x.view(torch.int16).numpy())
        return x.numpy()
    jax = _jax()
    if jax is not None and isinstance(x, jax.Array):
        platforms = {d.platform for d in x.devices()}
        if platforms != {"cpu"}:
            raise ValueError(
                f"{name} is a JAX array on {', '.join(sorted(platforms))}; xent computes on "
                f"the CPU: pass jax.device_put({name}, jax.devices('cpu')[0])"
            )
        x = np.asarray(x)
    elif not isinstance(x, np.ndarray) and hasattr(x, "__dlpack__"):
        try:
            x = np.from_dlpack(x)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{name} could not be read through DLPack (xent reads CPU memory): {exc}"
            ) from exc
    if isinstance(x, np.ndarray) and is_bfloat16(x.dtype):
        return bfloat16_bits_to_float32(x)
    return x


def framework_of(values) -> str | None:
    """``"torch"`` or ``"jax"`` for the first such array among ``values``, else ``None``."""
    torch, jax = _torch(), _jax()
    if torch is None and jax is None:
        return None
    for v in values:
        if torch is not None and isinstance(v, torch.Tensor):
            return "torch"
        if jax is not None and isinstance(v, jax.Array):
            return "jax"
    return None


def _convert(out, kind: str):
    if isinstance(out, tuple):
        return tuple(_convert(o, kind) for o in out)
    if out is None or not isinstance(out, (np.ndarray, np.generic)):
        return out  # dask arrays and the like stay as they are
    if kind == "torch":
        arr = np.asarray(out)  # a 0-d array (then tensor) for a scalar
        return _torch().from_numpy(arr if arr.flags.writeable else arr.copy())
    return sys.modules["jax.numpy"].asarray(out)


def returns_like_inputs(fn):
    """Return ``fn``'s arrays in the framework of its first torch or JAX argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        kind = framework_of(args) or framework_of(kwargs.values())
        return out if kind is None else _convert(out, kind)

    return wrapper
