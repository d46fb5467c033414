"""16-bit floats in the kernels: how they are handed over and widened to float32.

Numba has no float16 or bfloat16 arrays.  The engine hands 16-bit inputs over as views of
their raw bits (no copy): float16 as ``uint16``, bfloat16 as ``int16``.  Every element read in
a kernel goes through :func:`widen`, which returns float32 for these two types (exactly: both
formats are subsets of float32) and the element itself for any other number, so the
float32/float64 kernels compile to what they were.  Arithmetic on 16-bit input is float32
arithmetic, accumulated as for float32 input.

So ``int16`` and ``uint16`` arrays mean 16-bit floats to a kernel: the engine converts dense
targets of those integer dtypes to int32 before a launch (labels are always int64).  Why not
one-field record dtypes, which would keep the formats apart by type: Numba mangles the names
of functions specialised on a record type with a number that depends on the order types were
created in the process, so a kernel compiled and cached by one process, loaded by another
that had compiled other record specialisations, linked to the wrong helpers (measured: a
float16 evaluation read as bfloat16, loss 815,631 instead of 9.6).  Integer types mangle
stably.

Widening costs almost nothing: bfloat16 is the high half of a float32 (a shift), float16 is
``fpext half`` (one F16C/AVX-512 conversion instruction per vector).
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._bits import bits_from_f32
from ._config import SCALAR as _OPTS

_OVERLOAD_OPTS = {k: v for k, v in _OPTS.items() if k != "cache"}

#: The integer dtypes the engine views 16-bit inputs as.
BFLOAT16_BITS = np.dtype(np.int16)
FLOAT16_BITS = np.dtype(np.uint16)


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


@intrinsic
def _float32_to_float16_bits(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        half = builder.fptrunc(args[0], ir.HalfType())  # round to nearest even, as NumPy
        return builder.bitcast(half, ir.IntType(16))

    return types.uint16(x), codegen


def half_format(numba_type):
    """``"bfloat16"``, ``"float16"`` or ``None`` for a Numba scalar type."""
    if numba_type == types.int16:
        return "bfloat16"
    if numba_type == types.uint16:
        return "float16"
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
    """An element as a number the kernels compute with (16-bit floats become float32)."""
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
        return lambda x: _bfloat16_to_float32(x)
    if fmt == "float16":
        return lambda x: _float16_to_float32(x)
    if isinstance(x, (types.Float, types.Integer, types.Boolean)):
        return lambda x: x
    return None


def narrow(x, arr):  # pragma: no cover - replaced by the overload inside jitted code
    """``x`` (a number computed in the work type) as an element of ``arr``: rounded to nearest
    even for 16-bit floats (their bits, as the engine views them), cast otherwise."""
    raise NotImplementedError


@njit(types.int16(types.float32), **_OPTS)
def float32_to_bfloat16_bits(x):
    """bfloat16 bits of a float32, rounded to nearest even (as ml_dtypes and PyTorch); NaN stays
    a quiet NaN."""
    bits = np.int64(bits_from_f32(x)) & 0xFFFFFFFF
    if x != x:
        return np.int16(((bits >> 16) | 0x40) & 0xFFFF)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return np.int16(rounded & 0xFFFF)


@overload(narrow, jit_options=_OVERLOAD_OPTS, inline="always")
def _narrow_impl(x, arr):
    fmt = half_format(arr.dtype)
    if fmt == "bfloat16":
        return lambda x, arr: float32_to_bfloat16_bits(np.float32(x))
    if fmt == "float16":
        return lambda x, arr: _float32_to_float16_bits(np.float32(x))
    if arr.dtype == types.float32:
        return lambda x, arr: np.float32(x)
    if arr.dtype == types.float64:
        return lambda x, arr: np.float64(x)
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
