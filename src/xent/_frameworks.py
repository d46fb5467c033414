"""Arrays from other frameworks in, results back in the caller's framework.

Inputs: NumPy arrays (also of ``ml_dtypes.bfloat16``, which JAX hands to NumPy), PyTorch CPU
tensors of any dtype (read through ``detach()``; the front ends that differentiate wrap
their call in an autograd Function, ``_torch_autograd``), JAX CPU arrays, and anything
exposing ``__dlpack__``.  Every dtype is read in place (no copy).  bfloat16 arrays, whatever
they come from, are carried as a view of dtype :data:`BFLOAT16` (their raw bits in a
one-field record, so that NumPy never computes with them by mistake and ml_dtypes is not
needed); the kernels widen the bits to float32 as they read them.  A tensor on another
device is a ``ValueError`` that says so.

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


#: How bfloat16 data travels from the front ends to the engine: its 16 raw bits in a one-field
#: record (a view of the caller's memory).
BFLOAT16 = np.dtype([("bfloat16", "=u2")])


def is_bfloat16(dtype) -> bool:
    """Whether a NumPy dtype is bfloat16: :data:`BFLOAT16` or ``ml_dtypes.bfloat16`` (a 2-byte
    ``V`` kind to NumPy)."""
    return dtype == BFLOAT16 or (
        dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"
    )


def as_bfloat16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values, given as any 2-byte view of their bit patterns, as a :data:`BFLOAT16`
    view (no copy)."""
    return bits.view(BFLOAT16)


def as_float64(values: np.ndarray) -> np.ndarray:
    """A few values (a gather, O(N)) of any accepted float dtype as float64, exactly."""
    if is_bfloat16(values.dtype):
        wide = values.view(np.uint16).astype(np.uint32) << 16
        return wide.view(np.float32).astype(np.float64)
    return values.astype(np.float64)


_RESULT_DTYPES = ("float16", "float32", "float64", "bfloat16")


def check_result_dtype(dtype):
    """A requested result dtype as its name (``None`` stays ``None``): one of float16,
    float32, float64, bfloat16, given as a string, a NumPy dtype or a Keras ``DTypePolicy``."""
    if dtype is None:
        return None
    name = getattr(dtype, "compute_dtype", None) or getattr(dtype, "name", None) or dtype
    if not isinstance(name, str):
        try:
            name = np.dtype(name).name
        except TypeError:
            name = repr(name)
    if name not in _RESULT_DTYPES:
        raise ValueError(f"dtype must be None or one of {', '.join(_RESULT_DTYPES)}, got {dtype!r}")
    return name


def cast_result(out, dtype: str | None):
    """A loss (NumPy or dask) rounded to the requested result dtype."""
    if dtype is None:
        return out
    if dtype == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ValueError(
                "dtype='bfloat16' needs the ml_dtypes package (pip install ml_dtypes)"
            ) from None
        target = np.dtype(ml_dtypes.bfloat16)
    else:
        target = np.dtype(dtype)
    cast = out.astype(target)
    return cast[()] if isinstance(out, np.generic) else cast


def dtype_name(dtype) -> str:
    """The dtype as users name it (``bfloat16`` rather than the record carrying it)."""
    return "bfloat16" if is_bfloat16(np.dtype(dtype)) else str(np.dtype(dtype))


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
            return as_bfloat16(x.view(torch.int16).numpy())
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
            if torch is not None:  # NumPy has no bfloat16 in DLPack; torch reads it
                try:
                    return to_numpy(torch.from_dlpack(x), name)
                except (BufferError, RuntimeError, TypeError, ValueError):
                    pass
            raise ValueError(
                f"{name} could not be read through DLPack (xent reads CPU memory of NumPy's "
                f"dtypes, and bfloat16 through torch when it is imported): {exc}"
            ) from exc
    if isinstance(x, np.ndarray) and is_bfloat16(x.dtype):
        return as_bfloat16(x)
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
        torch = _torch()
        arr = np.asarray(out)  # a 0-d array (then tensor) for a scalar
        arr = arr if arr.flags.writeable else arr.copy()
        if is_bfloat16(arr.dtype):  # a requested bfloat16 result: torch reads its bits
            return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
        return torch.from_numpy(arr)
    if is_bfloat16(out.dtype):  # JAX takes bfloat16 as ml_dtypes' type (a JAX dependency)
        out = out.view(sys.modules["ml_dtypes"].bfloat16)
    return sys.modules["jax.numpy"].asarray(out)


def returns_like_inputs(fn):
    """Return ``fn``'s arrays in the framework of its first torch or JAX argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        out = fn(*args, **kwargs)
        kind = framework_of(args) or framework_of(kwargs.values())
        return out if kind is None else _convert(out, kind)

    return wrapper
