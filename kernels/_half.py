"""16-bit floats in the kernels: how they are handed over and widened to float32.

Numba has no float16 or bfloat16 arrays.  The engine hands 16-bit inputs over as arrays of a
one-field record holding the 16 raw bits (a view: no copy); the field's name says the format.
Every element read in a kernel goes through :func:`widen`, which returns float32 for these
records (exactly: both formats are subsets of float32) and the element itself for any other
number, so the float32/float64 kernels compile to what they were.  Arithmetic on 16-bit input
is float32 arithmetic, accumulated as for float32 input.

Widening costs almost nothing: bfloat16 is the high half of a float32 (a shift), float16 is
``fpext half`` (one F16C/AVX-512 conversion instruction per vector).  Records are distinct Numba
types, unlike a ``uint16`` view, so integer targets (any integer dtype) are never taken for
16-bit floats.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._config import SCALAR as _OPTS

_OVERLOAD_OPTS = {k: v for k, v in _OPTS.items() if k != "cache"}

#: The record dtypes the engine views 16-bit inputs as (native byte order).
BFLOAT16_BITS = np.dtype([("bfloat16", "=u2")])
FLOAT16_BITS = np.dtype([("float16", "=u2")])


@intrinsic
def _bfloat16_to_float32(typingctx, bits):
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        wide = builder.shl(builder.zext(args[0], i32), ir.Constant(i32, 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(bits), codegen


@intrinsic
def _float16_to_float32(typingctx, bits):
    if not (isinstance(bits, types.Integer) and bits.bitwidth == 16):
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(bits), codegen


def half_format(numba_type):
    """``"bfloat16"``, ``"float16"`` or ``None`` for a Numba scalar or record type."""
    if isinstance(numba_type, types.Record) and len(numba_type.fields) == 1:
        name = next(iter(numba_type.fields))
        if name in ("bfloat16", "float16"):
            return name
    return None


def float16_bits_to_float32(bits):  # pragma: no cover - replaced inside jitted code
    """A float16 given as its 16 bits (uint16), as float32."""
    raise NotImplementedError


@overload(float16_bits_to_float32, jit_options=_OVERLOAD_OPTS, inline="always")
def _float16_bits_impl(bits):
    if isinstance(bits, types.Integer) and bits.bitwidth == 16:
        return lambda bits: _float16_to_float32(bits)
    return None


def widen(x):  # pragma: no cover - replaced by the overload inside jitted code
    """An element as a number the kernels compute with (16-bit records become float32)."""
    raise NotImplementedError


def work_zero(arr):  # pragma: no cover - replaced by the overload inside jitted code
    """Zero in the type the kernels compute in for elements of ``arr``."""
    raise NotImplementedError


def work_empty(shape, arr):  # pragma: no cover - replaced by the overload inside jitted code
    """``np.empty(shape)`` in the type the kernels compute in for elements of ``arr``."""
    raise NotImplementedError


@overload(widen, jit_options=_OVERLOAD_OPTS, inline="always")
def _widen_impl(x):
    fmt = half_format(x)
    if fmt == "bfloat16":
        return lambda x: _bfloat16_to_float32(x.bfloat16)
    if fmt == "float16":
        return lambda x: _float16_to_float32(x.float16)
    if isinstance(x, (types.Float, types.Integer, types.Boolean)):
        return lambda x: x
    return None


def _work_type(arr):
    if half_format(arr.dtype) is not None:
        return types.float32
    return arr.dtype


@overload(work_zero, jit_options=_OVERLOAD_OPTS)
def _work_zero_impl(arr):
    if _work_type(arr) == types.float32:
        return lambda arr: np.float32(0.0)
    if _work_type(arr) == types.float64:
        return lambda arr: np.float64(0.0)
    return None


@overload(work_empty, jit_options=_OVERLOAD_OPTS)
def _work_empty_impl(shape, arr):
    if _work_type(arr) == types.float32:
        return lambda shape, arr: np.empty(shape, np.float32)
    if _work_type(arr) == types.float64:
        return lambda shape, arr: np.empty(shape, np.float64)
    return None
