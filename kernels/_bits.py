"""Bit-level intrinsics for the kernels: float/integer bit casts, order-preserving integer
keys of floats (for vectorised max scans) and the software prefetch hint."""

from numba import njit, types
from numba.extending import intrinsic, overload

from ._config import SCALAR as _OPTS

_OVERLOAD_OPTS = {k: v for k, v in _OPTS.items() if k != "cache"}


def _bitcast_intrinsic(src, dst):
    """Build an intrinsic reinterpreting the bits of ``src`` as ``dst`` (same width)."""

    @intrinsic
    def bitcast(typingctx, x):
        if not isinstance(x, (types.Integer, types.Float)):
            return None
        sig = dst(x)

        def codegen(context, builder, signature, args):
            (val,) = args
            src_ty = context.get_value_type(src)
            if isinstance(x, types.Integer):
                # Bring any integer to the width of ``src`` first (trunc / sign-extend).
                if x.bitwidth > src.bitwidth:
                    val = builder.trunc(val, src_ty)
                elif x.bitwidth < src.bitwidth:
                    val = builder.sext(val, src_ty)
            return builder.bitcast(val, context.get_value_type(dst))

        return sig, codegen

    return bitcast


#: Reinterpret integer bits as a float of the same width (any integer is truncated to 32/64).
f32_from_bits = _bitcast_intrinsic(types.int32, types.float32)
f64_from_bits = _bitcast_intrinsic(types.int64, types.float64)
#: Reinterpret a float's bits as a signed integer of the same width.
bits_from_f32 = _bitcast_intrinsic(types.float32, types.int32)
bits_from_f64 = _bitcast_intrinsic(types.float64, types.int64)


# ------------------------------------------------------------ software prefetch
@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to load the cache line of ``arr[index]`` (1-D array) into L1.

    A prefetch never faults and returns nothing; the callers keep ``index`` inside the
    array anyway.  Why it is needed: a loop as heavy as ``exp``/``log`` per element keeps
    too few loads in flight to stream from memory at full speed (measured: the same loop
    runs ~1.5x faster from cache); prefetching a little ahead lets the memory transfer
    overlap the arithmetic.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir
        from numba.core import cgutils

        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(
            context, builder, aryty, ary, [args[1]], wraparound=False, boundscheck=False
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
        # read (0), highest locality (3: keep in all cache levels), data cache (1)
        builder.call(
            fn,
            [
                builder.bitcast(ptr, i8p),
                ir.Constant(i32, 0),
                ir.Constant(i32, 3),
                ir.Constant(i32, 1),
            ],
        )
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@njit(**_OPTS)
def _ordered_bits_f32(x):
    """Signed integer whose order is the order of the float32 values (for max scans)."""
    b = bits_from_f32(x)
    return b ^ ((b >> 31) & 0x7FFFFFFF)


@njit(**_OPTS)
def _ordered_bits_f64(x):
    b = bits_from_f64(x)
    return b ^ ((b >> 63) & 0x7FFFFFFFFFFFFFFF)


def ordered_bits(x):  # pragma: no cover - replaced by the overload
    """Integer key with the float order of ``x``; +NaN sorts above +inf."""
    raise NotImplementedError


def from_ordered_bits(k, like):  # pragma: no cover - replaced by the overload
    """Inverse of :func:`ordered_bits`, giving the float type of ``like``."""
    raise NotImplementedError


@overload(ordered_bits, jit_options=_OVERLOAD_OPTS)
def _ordered_bits_impl(x):
    if x == types.float32:
        return lambda x: _ordered_bits_f32(x)
    if x == types.float64:
        return lambda x: _ordered_bits_f64(x)
    return None


@overload(from_ordered_bits, jit_options=_OVERLOAD_OPTS)
def _from_ordered_bits_impl(k, like):
    if like == types.float32:
        return lambda k, like: f32_from_bits(_ordered_bits_f32(f32_from_bits(k)))
    if like == types.float64:
        return lambda k, like: f64_from_bits(_ordered_bits_f64(f64_from_bits(k)))
    return None
