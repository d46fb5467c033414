"""Bit-level intrinsics for the kernels: float/integer bit casts, order-preserving integer
keys of floats (for vectorised max scans), the software prefetch hint and an in-register
transposition of small tiles."""

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


# ------------------------------------------------------------ in-register transposition
#: Rows and columns of the largest :func:`turn_tile`: a 512-bit vector of float32 or float64.
TILE_F32 = 16
TILE_F64 = 8


def tile_width(dtype) -> int:
    """Rows and columns of one :func:`turn_tile` of ``dtype`` (a Numba float type) on this
    CPU: one 512-bit vector with AVX-512, one 256-bit vector without.

    Why: without AVX-512 a 16 x 16 float32 tile is 32 256-bit registers of the 16 there
    are, and LLVM spilled most of them to the stack; with 8 x 8 tiles the 1,000,000 x 10
    dense loss took 0.88x as long, C = 8-32 0.77-0.89x, float64 C = 10 0.87x, the sparse
    loss 0.90-1.03x (a Haswell target on an Intel Xeon, emeraldrapids).
    """
    from ._simd import has_avx512

    wide = has_avx512()
    if dtype == types.float32:
        return TILE_F32 if wide else TILE_F32 // 2
    return TILE_F64 if wide else TILE_F64 // 2


def _tile_ok(x, out, indices):
    return (
        isinstance(x, types.Array)
        and x.ndim == 2
        and x.layout == "C"
        and x.dtype in (types.float32, types.float64)
        and isinstance(out, types.Array)
        and out.ndim == 2
        and out.layout == "C"
        and out.dtype == x.dtype
        and all(isinstance(a, types.Integer) for a in indices)
    )


def _tile_codegen(reduce):
    """Code of :data:`turn_tile` (``reduce`` None) and of :data:`turn_tile_max` /
    :func:`turn_tile_sum` (``reduce`` "max" / "sum": the tile's columns inside the row are
    also reduced into ``acc``)."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir
        from numba.core import cgutils

        dtype = signature.args[0].dtype
        width = tile_width(dtype)
        src = context.make_array(signature.args[0])(context, builder, args[0])
        dst = context.make_array(signature.args[3])(context, builder, args[3])
        i64 = ir.IntType(64)
        vector = ir.VectorType(context.get_value_type(dtype), width)
        lanes = ir.VectorType(ir.IntType(32), width)
        _, c = cgutils.unpack_tuple(builder, src.shape, 2)
        _, b = cgutils.unpack_tuple(builder, dst.shape, 2)
        first, col, lane0 = (builder.sext(a, i64) for a in (args[1], args[2], args[4]))

        def at(data, offset):
            return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

        rows = []
        for i in range(width):
            start = builder.add(builder.mul(builder.add(first, ir.Constant(i64, i)), c), col)
            rows.append(builder.load(at(src.data, start), align=1))
        d = width // 2
        while d >= 1:  # swap the off-diagonal d x d blocks of every 2d x 2d block
            keep = [k if not k & d else width + k - d for k in range(width)]
            take = [k + d if not k & d else width + k for k in range(width)]
            for i in range(width):
                if not i & d:
                    a, z = rows[i], rows[i + d]
                    rows[i] = builder.shuffle_vector(a, z, ir.Constant(lanes, keep))
                    rows[i + d] = builder.shuffle_vector(a, z, ir.Constant(lanes, take))
            d //= 2
        for j in range(width):
            start = builder.add(builder.mul(builder.add(col, ir.Constant(i64, j)), b), lane0)
            builder.store(rows[j], at(dst.data, start), align=1)
        if reduce is None:
            return context.get_dummy_value()
        # acc[rr + i] (op)= x[r0 + i, j] for the tile's columns j inside the row, in column
        # order; the first tile of a row (j0 = 0) starts from column 0 instead of acc
        acc = context.make_array(signature.args[5])(context, builder, args[5])
        where = at(acc.data, lane0)
        leading = builder.icmp_signed("==", col, ir.Constant(i64, 0))
        total = builder.select(leading, rows[0], builder.load(where, align=1))
        for j in range(width):
            inside = builder.icmp_signed("<", builder.add(col, ir.Constant(i64, j)), c)
            if j == 0:
                inside = builder.and_(inside, builder.not_(leading))
            if reduce == "max":  # x if x > m else m: a NaN is skipped unless it comes first
                bigger = builder.fcmp_ordered(">", rows[j], total)
                step = builder.select(bigger, rows[j], total)
            else:
                # a flag of its own: Numba adds its fast-math flags (reassociation) only to
                # float operations without any, and a reassociated sum would differ from
                # the column turn's, which adds in column order
                step = builder.fadd(total, rows[j], flags=("contract",))
            total = builder.select(inside, step, total)
        builder.store(total, where, align=1)
        return context.get_dummy_value()

    return codegen


def _reducing_tile(reduce):
    @intrinsic
    def turn(typingctx, x, r0, j0, out, rr, acc):
        ok = (
            _tile_ok(x, out, (r0, j0, rr))
            and isinstance(acc, types.Array)
            and acc.ndim == 1
            and acc.dtype == x.dtype
        )
        if not ok:
            return None
        return types.void(x, r0, j0, out, rr, acc), _tile_codegen(reduce)

    return turn


#: ``turn_tile(x, r0, j0, out, rr, acc)``: ``out[j0 + j, rr + i] = x[r0 + i, j0 + j]`` for
#: ``i, j < W`` (``W`` = :func:`tile_width`: 16 float32 and 8 float64 with AVX-512, half
#: that without), a ``W x W`` tile of a C-contiguous 2-D array
#: transposed in registers (``acc`` unused: the signature of the two below).  Each row is
#: read as one vector of ``W`` elements from ``x[r0 + i, j0]`` on, past the row's end into
#: the next row when ``j0 + W > C``; the transposed vectors are written whole, so ``out``
#: needs ``j0 + W`` rows.  The caller keeps every read inside ``x`` (nothing here checks).
#: Why: the column-by-column turn reads with strided gathers; this reads whole rows and
#: shuffles (log2 W rounds of swapping off-diagonal blocks), measured 2x faster for C = 10
#: float32 on AMD EPYC Zen 4 and slower for rows shorter than about a third of a vector
#: (see ``short_rows``).
turn_tile = _reducing_tile(None)
#: :func:`turn_tile`, and ``acc[rr + i]`` the maximum of row ``r0 + i`` over this tile's
#: columns and, from the second column tile on, ``acc``'s own (``acc`` needs ``rr + W``
#: elements).  Columns past the row's end are left out.  Why: the row maximum of a turned
#: block comes from the registers the turn already holds, not from a second pass over it.
turn_tile_max = _reducing_tile("max")
#: :func:`turn_tile`, and ``acc[rr + i]`` the sum of row ``r0 + i`` over the tile's columns
#: (in column order), added to ``acc``'s from the second column tile on.
turn_tile_sum = _reducing_tile("sum")
