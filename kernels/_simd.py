"""Explicit vector loops: float32 and float64 sums of ``2**u`` (a row; a row with its targets;
the columns of a turned short-row block), the short-row blocks' ``log1p`` and the logs of clipped
probabilities, in 16 lanes with AVX-512 or 8 with AVX2 and FMA.

The one-pass ``2**u`` of ``_math`` is plain scalar code that LLVM vectorises; it needs a clamp
on each side, a rounding by a "magic" constant (two adds and a subtraction) and the exponent
built from integer bits.  AVX-512 has two instructions that do that work and that LLVM's
loop vectoriser never emits from scalar code: ``vreduceps`` (``u - floor(u)`` in one step)
and ``vscalefps`` (``p 2**floor(u)`` with the hardware's own handling of the whole range:
0 below the smallest number, inf above the largest, NaN kept).  A term ``2**((x - M) log2 e)``
then takes five instructions besides its degree-6 polynomial instead of ten, so the loop
here is written with explicit 16-lane vectors:

    f = u - floor(u)         (vreduceps)
    p = P(f) ~ 2**f on [0, 1) (six fused multiply-adds)
    2**u = p 2**floor(u)     (vscalefps)

Measured on AMD EPYC Zen 4 (2 cores): the exp floor (sums of 2**u over a cache-resident
float32 piece) 7.0-7.6 ms per 1e8 elements against 9.4-9.7 ms for the vectorised scalar
code; one row summed from L1 0.55 cycles per element against 0.78.  The error is at most
1.21 ulp (the scalar code's 0.93; the contract is 2, ``tests/test_math.py``).  The whole row
is one loop: called once per block of 256 elements, the same loop cost 0.19 cycles per
element more (loop set-up and the final lane sum every 256 elements).

Edge values: ``u = -inf`` gives an exact 0 (``vreduceps`` of an infinity is 0 and
``scalef(1, -inf) = 0``), ``u`` below -149 gives 0 and between -149 and -126 a subnormal
(smaller than any term of a sum whose largest term is at least 1); NaN gives NaN; ``u``
above 64 gives at least ``2**64`` (inf beyond 128), so the one-pass sums still reject a
guessed shift that lies far below the row maximum.

The short-row blocks end with one ``log1p`` per row; :func:`log1p_rows_f32` computes it as
``_math.log1p_f32`` does, with the exponent and mantissa from ``vgetexpps`` / ``vgetmantps``
instead of integer bit work (which LLVM did in 64-bit lanes there); :func:`log_rows_f32` takes
the logs of the probability kernels' clipped pieces the same way (1.35 cycles per element from
L1 against 2.4 for the vectorised ``_math.log_f32``, AMD EPYC Zen 4; within 0.89 ulp).

With AVX2 and FMA but no AVX-512 (most desktop CPUs, AMD before Zen 4) the same loops run in
8 lanes, each term the scalar code's own ``2**u`` (:func:`_exp2_vector_avx2`, bit for bit);
what the explicit loop saves there is LLVM's loop around it.  The logs are ``_math.log_f32``'s
operations in their order too (bit for bit), the bit work in 32-bit integer lanes where
LLVM's vectoriser used Numba's 64-bit integers.  Measured on AMD EPYC Zen 3
(2 cores, one thread, a row summed from L1): 1.0-1.07 cycles per element against 1.2-1.3
for 1,000- and 16,000-element rows, 4.3 against 12 for 10-element rows; a log from L1
1.03-1.09 ns per element against 1.26-1.31.

On an Intel Xeon with AVX-512 (LLVM ``rocketlake``, 2 cores) the 16 lanes were measured
against the 8-lane loops compiled for the same CPU without its AVX-512 features (a process
with ``NUMBA_CPU_FEATURES`` so set, runs alternated): the exp floor 5.9-6.1 against 12.6 ms per
1e8 elements, the sparse loss on 100,000 x 1,000 17.0-17.3 against 21.4-22.8 ms, on
1,000,000 x 10 3.9-4.7 against 6.0-6.7 ms; so every CPU with AVX-512F and AVX-512DQ takes 16.

With AVX-512, float64 rows take the same loops in 8 lanes, the rounding and scaling of each
term by ``vreducepd`` and ``vscalefpd`` (:func:`_exp2_vector_f64_avx512`, bit for bit the
scalar code's terms within its range but for exact ties).  Measured on an Intel Xeon (LLVM
``emeraldrapids``, 2 cores) against the vectorised scalar loops, 100,000 x 1,000 float64,
paired medians: the exp floor 0.61-0.68, the sparse loss 0.68-0.73, the dense loss
0.62-0.67; of that, ``vreducepd`` and ``vscalefpd`` against the explicit loop with the scalar
code's operations: the exp floor 0.79, the dense sums 0.92.  With AVX2 only, float64 rows
keep the vectorised scalar loops: the 4-lane loop (the same Xeon compiling for Haswell) made
the sparse loss 1.21x slower (the dense 0.94x, the exp floor 0.97x).  The turned short-row
blocks take 4 double lanes there as before.

The 16-lane loops are compiled only where the CPU has AVX-512F and AVX-512DQ
(:func:`has_avx512`), the 8-lane ones where it has AVX2 and FMA (:func:`vector_lanes`), both
read from the features Numba compiles for, which also key its cache; elsewhere the callers
keep their scalar loops.  Numba does not bounds-check; the loops read ``block[0:n]`` only
(the last partial vector with a masked load).
"""

from numba import types
from numba.extending import intrinsic

# log_f32's constants (its split of ln 2: one constant, not two) and exp2_f32's rounding and
# polynomial
from ._math import (
    _FLT_MIN,
    _LN2HI_32L,
    _LN2LO_32L,
    _MAGIC32,
    _MAGIC64,
    _SQRT2_32,
    _TWO23,
    EXP2_HI,
    EXP2_POLY_F32,
    EXP2_POLY_F64,
)

#: float32 lanes of one 512-bit vector.
LANES = 16
#: float32 lanes of one 256-bit (AVX2) vector.
LANES_AVX2 = 8
_LOG2E_32 = 1.4426950408889634
#: Coefficients of ``P(f) = 1 + c1 f + ... + c6 f**6 ~ 2**f`` on ``[0, 1)``: the least-squares
#: fit of the relative error at 20,000 Chebyshev nodes, rounded to float32 (relative error
#: 1.1e-8 with these float32 coefficients).
_P = (
    0.6931470632553101,
    0.24022932350635529,
    0.05548521876335144,
    0.009675532579421997,
    0.0012467376654967666,
    0.0002161380834877491,
)
#: ``vreduceps`` immediate: keep 0 fraction bits (bits 7:4), round down (bits 1:0 = 01),
#: use this rounding rather than MXCSR's (bit 2 = 0), suppress the inexact flag (bit 3).
_REDUCE_FLOOR = 0x09
#: Rounding argument of the 512-bit intrinsics: the current direction (no override).
_CUR_DIRECTION = 4
#: Explicit flags on every float operation: Numba gives reassociation to those without any.
_CONTRACT = ("contract",)


def _features() -> list[str]:
    try:
        from numba.core.registry import cpu_target

        return cpu_target.target_context.codegen()._tm_features.split(",")
    except Exception:  # pragma: no cover - a Numba without that attribute: the scalar loops
        return []


def has_avx512() -> bool:
    """True when Numba compiles for a CPU with AVX-512F and AVX-512DQ."""
    features = _features()
    return "+avx512f" in features and "+avx512dq" in features


def vector_lanes() -> int:
    """float32 lanes of the explicit ``2**u`` loops on the CPU Numba compiles for: 16 with
    AVX-512F and AVX-512DQ, 8 with AVX2 and FMA, 0 without (the scalar loops only)."""
    if has_avx512():
        return LANES
    features = _features()
    return LANES_AVX2 if "+avx2" in features and "+fma" in features else 0


def has_vector_exp() -> bool:
    """True when the explicit loops (sums of ``2**u``, turned blocks, :func:`log_rows_f32`,
    :func:`log1p_rows_f32`) are compiled here: AVX-512, or AVX2 with FMA."""
    return vector_lanes() > 0


def _float_vector():
    """The ``<lanes x float>`` type of this CPU's explicit loops."""
    from llvmlite import ir

    return ir.VectorType(ir.FloatType(), vector_lanes())


def _splat(ir, vector, value):
    return ir.Constant(vector, [ir.Constant(vector.element, value)] * vector.count)


def _reduce_and_scalef(builder, vf):
    """The AVX-512 ``vreduce`` and ``vscalef`` intrinsics of the 512-bit vector type ``vf``
    (16 float or 8 double) and their trailing arguments for an unmasked call: ``(reduce,
    scalef, unmasked)``; ``reduce(x, imm, *unmasked)``, ``scalef(p, k, *unmasked)``."""
    from llvmlite import ir
    from numba.core import cgutils

    kind = "pd" if isinstance(vf.element, ir.DoubleType) else "ps"
    mask, i32 = ir.IntType(vf.count), ir.IntType(32)  # one bit a lane
    module = builder.module
    unmasked = [
        ir.Constant(vf, ir.Undefined),
        ir.Constant(mask, -1),
        ir.Constant(i32, _CUR_DIRECTION),
    ]
    reduce_ = cgutils.get_or_insert_function(
        module,
        ir.FunctionType(vf, [vf, i32, vf, mask, i32]),
        f"llvm.x86.avx512.mask.reduce.{kind}.512",
    )
    scalef = cgutils.get_or_insert_function(
        module,
        ir.FunctionType(vf, [vf, vf, vf, mask, i32]),
        f"llvm.x86.avx512.mask.scalef.{kind}.512",
    )
    return reduce_, scalef, unmasked


def _exp2_vector(builder, u):
    """IR of ``2**u`` for a ``<16 x float>`` (see the module docstring) or, with AVX2, an
    ``<8 x float>`` (:func:`_exp2_vector_avx2`)."""
    from llvmlite import ir

    vf = u.type
    if isinstance(vf.element, ir.DoubleType):
        return _exp2_vector_f64(builder, u)
    if vf.count == LANES_AVX2:
        return _exp2_vector_avx2(builder, u)
    reduce_, scalef, unmasked = _reduce_and_scalef(builder, vf)
    f = builder.call(reduce_, [u, ir.Constant(ir.IntType(32), _REDUCE_FLOOR)] + unmasked)
    p = _splat(ir, vf, _P[-1])
    for c in _P[-2::-1] + (1.0,):  # Horner, each step one fused multiply-add
        p = builder.fadd(builder.fmul(p, f, flags=_CONTRACT), _splat(ir, vf, c), flags=_CONTRACT)
    return builder.call(scalef, [p, u] + unmasked)


def _exp2_vector_avx2(builder, u):
    """IR of ``2**u`` for an ``<8 x float>``, the operations of ``_math.exp2_f32`` in the
    same order (so each term is the scalar code's, bit for bit): clamp to ``[-127, 64]``, round
    by the magic constant, its minimax polynomial, the scale from the constant's bits.

    Written out rather than left to LLVM's vectoriser because, inside a loop the vectoriser
    made of the scalar code, the loop around it cost as much again (AMD EPYC Zen 3: the exp
    floor, a 16 KiB piece summed repeatedly, 1.2-1.4 cycles per element per core against
    0.9-1.0 here; whole rows 2x).  The clamps are ``vmaxps``/``vminps`` with the bound
    first: those return their second operand when either is NaN, so NaN stays NaN (one
    instruction each, where LLVM made the scalar code's pair of selects three)."""
    from llvmlite import ir
    from numba.core import cgutils

    vf = u.type
    vi = ir.VectorType(ir.IntType(32), vf.count)
    module = builder.module
    vmax, vmin = (
        cgutils.get_or_insert_function(
            module, ir.FunctionType(vf, [vf, vf]), f"llvm.x86.avx.{op}.ps.256"
        )
        for op in ("max", "min")
    )
    uc = builder.call(vmax, [_splat(ir, vf, -127.0), u])
    uc = builder.call(vmin, [_splat(ir, vf, EXP2_HI), uc])
    magic = _splat(ir, vf, float(_MAGIC32))
    t = builder.fadd(uc, magic, flags=_CONTRACT)
    f = builder.fsub(uc, builder.fsub(t, magic, flags=_CONTRACT), flags=_CONTRACT)
    p = _splat(ir, vf, float(EXP2_POLY_F32[0]))
    for c in EXP2_POLY_F32[1:]:  # Horner, each step one fused multiply-add
        p = builder.fmul(p, f, flags=_CONTRACT)
        p = builder.fadd(p, _splat(ir, vf, float(c)), flags=_CONTRACT)
    scale = builder.bitcast(builder.shl(builder.bitcast(t, vi), _splat(ir, vi, 23)), vf)
    return builder.fmul(p, scale, flags=_CONTRACT)


def _exp2_vector_f64(builder, u):
    """IR of ``2**u`` for a vector of doubles, the operations of ``_math.exp2_f64`` in the same
    order (each term the scalar code's, bit for bit; AVX-512 has no double ``vreduce`` /
    ``vscalef`` gain worth a second polynomial here): clamps as compare-and-select that keep
    NaN, the magic-constant rounding, the degree-13 polynomial, the scale from the constant's
    bits."""
    from llvmlite import ir

    vf = u.type
    if vf.count == LANES // 2 and has_avx512():
        return _exp2_vector_f64_avx512(builder, u)
    vi = ir.VectorType(ir.IntType(64), vf.count)
    c = lambda v: _splat(ir, vf, v)  # noqa: E731
    lo, hi = c(-1023.0), c(EXP2_HI)
    uc = builder.select(builder.fcmp_ordered("<", u, lo), lo, u)  # NaN fails: stays NaN
    uc = builder.select(builder.fcmp_ordered(">", uc, hi), hi, uc)
    magic = c(_MAGIC64)
    t = builder.fadd(uc, magic, flags=_CONTRACT)
    f = builder.fsub(uc, builder.fsub(t, magic, flags=_CONTRACT), flags=_CONTRACT)
    p = c(EXP2_POLY_F64[0])
    for coef in EXP2_POLY_F64[1:]:  # Horner, each step one fused multiply-add
        p = builder.fadd(builder.fmul(p, f, flags=_CONTRACT), c(coef), flags=_CONTRACT)
    scale = builder.bitcast(builder.shl(builder.bitcast(t, vi), _splat(ir, vi, 52)), vf)
    return builder.fmul(p, scale, flags=_CONTRACT)


#: ``vreducepd`` immediate: keep 0 fraction bits, round to nearest even (bits 1:0 = 00) by
#: this immediate (bit 2 = 0), suppress the inexact flag (bit 3).
_REDUCE_NEAREST = 0x08


def _exp2_vector_f64_avx512(builder, u):
    """IR of ``2**u`` for an ``<8 x double>`` with AVX-512: ``f = u - round(u)`` in one
    ``vreducepd`` (round to nearest even, as the magic constant rounds), ``k = u - f`` (exact:
    the integer ``round(u)``), the same degree-12 polynomial, ``p 2**k`` in one ``vscalefpd``.

    Within the scalar code's range each term is the scalar code's, bit for bit (the same
    exact ``f``, the same fused multiply-adds, an exact scaling), except at an exact tie
    ``u = k + 1/2``, which the scalar code's magic constant (its bias included) rounds to odd
    ``k`` and ``vreducepd`` to even ``k`` (``f = -1/2`` or ``1/2``: equally accurate); outside
    it the hardware's own range handling replaces the clamps: below ``2**-1022`` a subnormal
    or 0, ``u = -inf`` an exact 0 (``vreducepd`` of an infinity is 0 and ``scalef(p, -inf) =
    0``), above 64 the true ``2**u`` (inf beyond 1024), NaN kept.  A term takes 15 instructions
    instead of 21: the two clamps (compare and blend each) and the magic constant's add,
    subtract and shift go, one subtraction comes."""
    from llvmlite import ir

    vf = u.type
    reduce_, scalef, unmasked = _reduce_and_scalef(builder, vf)
    f = builder.call(reduce_, [u, ir.Constant(ir.IntType(32), _REDUCE_NEAREST)] + unmasked)
    k = builder.fsub(u, f, flags=_CONTRACT)
    p = _splat(ir, vf, EXP2_POLY_F64[0])
    for coef in EXP2_POLY_F64[1:]:  # Horner, each step one fused multiply-add
        p = builder.fadd(builder.fmul(p, f, flags=_CONTRACT), _splat(ir, vf, coef), flags=_CONTRACT)
    return builder.call(scalef, [p, k] + unmasked)


def row_sums_accept(shift, *rows) -> bool:
    """Whether the row intrinsics (:func:`sum_exp2_intrinsic`, :func:`dense_sums_intrinsic`)
    take these Numba types: C-contiguous 1-D arrays of the float type of ``shift``, float32,
    or float64 where the CPU has AVX-512 (see the module docstring)."""
    wide = shift == types.float64 and has_avx512()
    return (shift == types.float32 or wide) and _c_arrays_of(shift, rows, 1)


#: float32 terms summed per lane before the lane sums are added to float64 ones (16 lanes x
#: 16 terms: the ``STREAM_BLOCK`` of the scalar loops).
_BLOCK_VECTORS = 16


def _row_loop(context, builder, signature, args, rows, ahead, n_acc, step):
    """Loop of the row intrinsics over the C-contiguous 1-D arrays at argument positions
    ``rows`` (all as long as the first, all float32 or all float64): ``accs = step(xs, mask,
    accs)`` for each vector of 16 or 8 float32 (8 float64) elements (``xs`` one vector
    per array, ``mask`` None or, for the last partial vector, the lanes inside the row: the
    terms of the others must be 0), ``n_acc`` accumulators per lane in the arrays' type added
    to float64 ones every 16 vectors, the lanes added
    pairwise at the end (a fixed order for a given length).  Prefetches ``ahead`` elements
    ahead in each array (0: none).  Returns the ``n_acc`` float64 totals."""
    from llvmlite import ir
    from numba.core import cgutils

    f64 = ir.DoubleType()
    i1, i8, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
    dtype = signature.args[rows[0]].dtype
    vf = _vector_of(dtype)
    lanes, itemsize = vf.count, 8 if dtype == types.float64 else 4
    vi, vd = ir.VectorType(i32, lanes), ir.VectorType(f64, lanes)
    arrays = [context.make_array(signature.args[k])(context, builder, args[k]) for k in rows]
    n = builder.extract_value(arrays[0].shape, 0)
    zero, zero_d = _splat(ir, vf, 0.0), _splat(ir, vd, 0.0)

    def widened(v):  # float32 lane sums into float64 ones; float64 ones as they are
        return v if vf == vd else builder.fpext(v, vd)

    def at(array, offset):
        return builder.bitcast(builder.gep(array.data, [offset]), vf.as_pointer())

    def const(v):
        return ir.Constant(i64, v)

    full = builder.and_(n, const(-lanes))
    entry = builder.block
    outer_head = builder.append_basic_block("row.blocks")
    outer_body = builder.append_basic_block("row.block")
    inner_head = builder.append_basic_block("row.vectors")
    inner_body = builder.append_basic_block("row.vector")
    inner_exit = builder.append_basic_block("row.block_end")
    tail = builder.append_basic_block("row.tail")
    builder.branch(outer_head)

    builder.position_at_end(outer_head)
    b = builder.phi(i64)
    b.add_incoming(const(0), entry)
    acc64 = [builder.phi(vd) for _ in range(n_acc)]
    for a in acc64:
        a.add_incoming(zero_d, entry)
    builder.cbranch(builder.icmp_signed("<", b, full), outer_body, tail)

    builder.position_at_end(outer_body)
    b_end = builder.add(b, const(lanes * _BLOCK_VECTORS))
    end = builder.select(builder.icmp_signed("<", b_end, full), b_end, full)
    builder.branch(inner_head)

    builder.position_at_end(inner_head)
    j = builder.phi(i64)
    j.add_incoming(b, outer_body)
    acc = [builder.phi(vf) for _ in range(n_acc)]
    for a in acc:
        a.add_incoming(zero, outer_body)
    builder.cbranch(builder.icmp_signed("<", j, end), inner_body, inner_exit)

    builder.position_at_end(inner_body)
    if ahead:
        # one cache line (16 float32, 8 float64) per vector: prefetch the line ``ahead`` on,
        # kept inside the row (a prefetch never faults, but nothing here reads outside)
        last = builder.sub(n, const(1))
        k = builder.add(j, const(ahead))
        k = builder.select(builder.icmp_signed("<", k, last), k, last)
        i8p = i8.as_pointer()
        fetch = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0i8",
        )
        hint = [ir.Constant(i32, v) for v in (0, 3, 1)]  # read, keep in all levels, data
        for array in arrays:
            builder.call(fetch, [builder.bitcast(builder.gep(array.data, [k]), i8p)] + hint)
    acc_next = step([builder.load(at(array, j), align=itemsize) for array in arrays], None, acc)
    body_end = builder.block
    j.add_incoming(builder.add(j, const(lanes)), body_end)
    for a, v in zip(acc, acc_next):
        a.add_incoming(v, body_end)
    builder.branch(inner_head)

    builder.position_at_end(inner_exit)
    b.add_incoming(b_end, inner_exit)
    for a64, a in zip(acc64, acc):
        a64.add_incoming(builder.fadd(a64, widened(a), flags=_CONTRACT), inner_exit)
    builder.branch(outer_head)

    # the last n - full < lanes elements: masked loads (lanes past the end are never read)
    builder.position_at_end(tail)
    left = builder.trunc(builder.sub(n, full), i32)
    left_v = builder.shuffle_vector(
        builder.insert_element(ir.Constant(vi, ir.Undefined), left, ir.Constant(i32, 0)),
        ir.Constant(vi, ir.Undefined),
        ir.Constant(vi, [0] * lanes),
    )
    mask = builder.icmp_signed("<", ir.Constant(vi, list(range(lanes))), left_v)
    masked_load = cgutils.get_or_insert_function(
        builder.module,
        ir.FunctionType(vf, [vf.as_pointer(), i32, ir.VectorType(i1, lanes), vf]),
        f"llvm.masked.load.v{lanes}f{8 * itemsize}.p0v{lanes}f{8 * itemsize}",
    )
    aligned = ir.Constant(i32, itemsize)
    xs = [builder.call(masked_load, [at(a, full), aligned, mask, zero]) for a in arrays]
    last = step(xs, mask, [zero] * n_acc)
    totals = []
    for a64, a in zip(acc64, last):
        total = builder.fadd(a64, widened(a), flags=_CONTRACT)
        width = lanes
        while width > 1:  # lanes added pairwise: the same order for every row length
            half = width // 2
            halves = [list(range(half)), list(range(half, width))]
            lo, hi = (
                builder.shuffle_vector(total, total, ir.Constant(ir.VectorType(i32, half), h))
                for h in halves
            )
            total = builder.fadd(lo, hi, flags=_CONTRACT)
            width = half
        totals.append(builder.extract_element(total, ir.Constant(i32, 0)))
    return totals


def _splat_arg(builder, value, dtype):
    """A float argument (Numba type ``dtype``) in every lane of its vector type."""
    from llvmlite import ir

    vf = _vector_of(dtype)
    i32 = ir.IntType(32)
    one = builder.insert_element(ir.Constant(vf, ir.Undefined), value, ir.Constant(i32, 0))
    lanes = ir.Constant(ir.VectorType(i32, vf.count), [0] * vf.count)
    return builder.shuffle_vector(one, ir.Constant(vf, ir.Undefined), lanes)


def _sum_exp2_codegen(ahead):
    """Code of ``sum 2**((x - shift) log2 e)`` over a C-contiguous float32 or float64 row,
    prefetching ``ahead`` elements ahead (0: no prefetch)."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        sh = _splat_arg(builder, args[1], signature.args[1])
        log2e = _splat(ir, sh.type, _LOG2E_32)
        zero = _splat(ir, sh.type, 0.0)

        def step(xs, mask, accs):
            # 2**((x - shift) log2 e), rounded as the scalar loops' (x - s) * c
            d = builder.fsub(xs[0], sh, flags=_CONTRACT)
            e = _exp2_vector(builder, builder.fmul(d, log2e, flags=_CONTRACT))
            if mask is not None:
                e = builder.select(mask, e, zero)
            return [builder.fadd(accs[0], e, flags=_CONTRACT)]

        (total,) = _row_loop(context, builder, signature, args, [0], ahead, 1, step)
        return total

    return codegen


def _dense_sums_codegen(ahead):
    """Code of :data:`dense_sums_f32`."""

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        sh = _splat_arg(builder, args[2], signature.args[2])
        log2e = _splat(ir, sh.type, _LOG2E_32)
        zero = _splat(ir, sh.type, 0.0)

        def step(xs, mask, accs):
            z, t = xs  # masked lanes load t = 0: nothing enters the target sums
            d = builder.fsub(z, sh, flags=_CONTRACT)
            e = _exp2_vector(builder, builder.fmul(d, log2e, flags=_CONTRACT))
            if mask is not None:
                e = builder.select(mask, e, zero)
            weighed = builder.fcmp_unordered("!=", t, zero)  # NaN targets count (and show)
            td = builder.select(weighed, builder.fmul(t, d, flags=_CONTRACT), zero)
            return [
                builder.fadd(accs[0], e, flags=_CONTRACT),
                builder.fadd(accs[1], t, flags=_CONTRACT),
                builder.fadd(accs[2], td, flags=_CONTRACT),
            ]

        totals = _row_loop(context, builder, signature, args, [0, 1], ahead, 3, step)
        return context.make_tuple(builder, signature.return_type, totals)

    return codegen


def dense_sums_intrinsic(ahead):
    """The intrinsic ``f(row, trow, shift) = (sum 2**(d log2 e), sum t, sum t d)`` with ``d =
    row - shift`` (float64 results; ``t d`` only where ``t != 0``, so ``0 * -inf`` is never
    formed) over C-contiguous rows of logits and targets of the same length and float type
    (float32 or float64, that of ``shift``), accumulated as :func:`sum_exp2_intrinsic`.
    AVX-512 or AVX2 (:func:`has_vector_exp`)."""

    @intrinsic
    def dense_sums(typingctx, row, trow, shift):
        if not row_sums_accept(shift, row, trow):
            return None
        sig = types.UniTuple(types.float64, 3)(row, trow, shift)
        return sig, _dense_sums_codegen(ahead)

    return dense_sums


def sum_exp2_intrinsic(ahead):
    """The intrinsic ``f(row, shift) = sum 2**((row[j] - shift) log2 e)`` (float64) over a
    C-contiguous float32 or float64 row (the type of ``shift``), prefetching ``ahead`` elements
    ahead, one cache line per vector (0: no prefetch).

    Each of the 16 (or 8) float32 lanes sums 16 terms in float32, then adds them to its
    float64 sum (8 float64 lanes, AVX-512 only, sum in float64 throughout); the lanes are added
    pairwise at the end (a fixed order for a given row length).  AVX-512 or AVX2
    (:func:`has_vector_exp`).
    """

    @intrinsic
    def sum_exp2(typingctx, row, shift):
        if not row_sums_accept(shift, row):
            return None
        return types.float64(row, shift), _sum_exp2_codegen(ahead)

    return sum_exp2


#: ``sum_exp2(row, shift)``: :func:`sum_exp2_intrinsic` without prefetch.
sum_exp2 = sum_exp2_intrinsic(0)


def _c_arrays_of(dtype, arrays, ndim) -> bool:
    """Whether every Numba type in ``arrays`` is a C-contiguous ``dtype`` array of ``ndim``
    dimensions: the one test of what the explicit loops read."""
    return all(
        isinstance(a, types.Array) and a.ndim == ndim and a.layout == "C" and a.dtype == dtype
        for a in arrays
    )


def f32_rows_accept(*arrays, ndim=1) -> bool:
    """Whether every Numba type is a C-contiguous float32 array of ``ndim`` dimensions."""
    return _c_arrays_of(types.float32, arrays, ndim)


def _same_float_rows(blocks, rows) -> bool:
    """Whether the 2-D ``blocks`` and 1-D ``rows`` are C-contiguous arrays of one float type,
    float32 or float64."""
    dtype = getattr(blocks[0], "dtype", None)
    if dtype not in (types.float32, types.float64):
        return False
    return _c_arrays_of(dtype, blocks, 2) and _c_arrays_of(dtype, rows, 1)


def turned_sum_accepts(bz, c, shift, s) -> bool:
    """Whether :func:`turned_sum_exp2` takes these Numba types."""
    return _same_float_rows([bz], [shift, s]) and isinstance(c, types.Integer)


def turned_dense_accepts(bz, bt, c, m, s, ties, tz) -> bool:
    """Whether :func:`turned_dense_sums` takes these Numba types."""
    return _same_float_rows([bz, bt], [m, s, ties, tz]) and isinstance(c, types.Integer)


def _vector_of(dtype):
    """The vector type of this CPU's explicit loops for a Numba float type: ``<lanes x
    float>`` for float32, ``<lanes / 2 x double>`` (the same register) for float64."""
    from llvmlite import ir

    if dtype == types.float64:
        return ir.VectorType(ir.DoubleType(), vector_lanes() // 2)
    return _float_vector()


def _turned_loops(context, builder, signature, args, blocks, c, columns, outputs, step):
    """Loops of the turned-block intrinsics: for each group of columns ``g`` (a vector of the
    blocks' type: 16 or 8 float32, 8 or 4 float64), the lane
    vectors of ``columns`` (1-D arrays, argument positions) at ``g``, accumulators
    started at 0, ``accs = step(xs, cols, accs)`` for each class ``j < c`` in order (``xs``
    the vectors of the 2-D ``blocks`` at row ``j``), then each accumulator stored into its
    1-D ``outputs`` array at ``g``."""
    from llvmlite import ir
    from numba.core import cgutils

    i64 = ir.IntType(64)
    vf = _vector_of(signature.args[blocks[0]].dtype)

    def array(k):
        return context.make_array(signature.args[k])(context, builder, args[k])

    def at(data, offset):
        return builder.bitcast(builder.gep(data, [offset]), vf.as_pointer())

    data_2d = [array(k).data for k in blocks]
    _, width = cgutils.unpack_tuple(builder, array(blocks[0]).shape, 2)
    classes = args[c]
    if classes.type.width < 64:
        classes = builder.sext(classes, i64)
    data_cols = [array(k).data for k in columns]
    data_out = [array(k).data for k in outputs]

    entry = builder.block
    group_head = builder.append_basic_block("turned.groups")
    group_body = builder.append_basic_block("turned.group")
    class_head = builder.append_basic_block("turned.classes")
    class_body = builder.append_basic_block("turned.class")
    group_end = builder.append_basic_block("turned.group_end")
    done = builder.append_basic_block("turned.done")
    builder.branch(group_head)

    builder.position_at_end(group_head)
    g = builder.phi(i64)
    g.add_incoming(ir.Constant(i64, 0), entry)
    builder.cbranch(builder.icmp_signed("<", g, width), group_body, done)

    builder.position_at_end(group_body)
    cols = [builder.load(at(d, g), align=4) for d in data_cols]
    builder.branch(class_head)

    builder.position_at_end(class_head)
    j = builder.phi(i64)
    j.add_incoming(ir.Constant(i64, 0), group_body)
    accs = []
    for _ in outputs:
        acc = builder.phi(vf)
        acc.add_incoming(_splat(ir, vf, 0.0), group_body)
        accs.append(acc)
    builder.cbranch(builder.icmp_signed("<", j, classes), class_body, group_end)

    builder.position_at_end(class_body)
    offset = builder.add(builder.mul(j, width), g)
    xs = [builder.load(at(d, offset), align=4) for d in data_2d]
    new = step(xs, cols, accs)
    body_end = builder.block
    j.add_incoming(builder.add(j, ir.Constant(i64, 1)), body_end)
    for acc, value in zip(accs, new):
        acc.add_incoming(value, body_end)
    builder.branch(class_head)

    builder.position_at_end(group_end)
    for d, acc in zip(data_out, accs):
        builder.store(acc, at(d, g), align=4)
    g.add_incoming(builder.add(g, ir.Constant(i64, vf.count)), group_end)
    builder.branch(group_head)

    builder.position_at_end(done)
    return context.get_dummy_value()


@intrinsic
def turned_sum_exp2(typingctx, bz, c, shift, s):
    """``s[r] = sum_{j < c} 2**((bz[j, r] - shift[r]) log2 e)`` for every column ``r`` of a
    turned block ``bz`` (C-contiguous float32 or float64, rows = classes, columns = the
    block's rows; the column count a multiple of 16, ``shift`` and ``s`` at least that long
    and of that type), each column's
    terms added in class order.  Columns past the block's last row are computed from
    whatever the buffer holds and not used (every row then goes through the same lanes, so
    its sum does not depend on its place in a block).  AVX-512 or AVX2 (:func:`has_vector_exp`);
    nothing here checks the sizes."""
    if not turned_sum_accepts(bz, c, shift, s):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        log2e = _splat(ir, _vector_of(signature.args[0].dtype), _LOG2E_32)

        def step(xs, cols, accs):
            d = builder.fsub(xs[0], cols[0], flags=_CONTRACT)
            e = _exp2_vector(builder, builder.fmul(d, log2e, flags=_CONTRACT))
            return [builder.fadd(accs[0], e, flags=_CONTRACT)]

        return _turned_loops(context, builder, signature, args, [0], 1, [2], [3], step)

    return types.void(bz, c, shift, s), codegen


def _below_max_step(builder, z, m, s, ties):
    """IR of one class of a turned block summed relative to the row maxima ``m``: ``d = z - m``,
    ``s + 2**(d log2 e)`` over the terms with ``d != 0``, ``ties + 1`` where ``d == 0``."""
    from llvmlite import ir

    vf = z.type
    log2e, zero, one = (_splat(ir, vf, v) for v in (_LOG2E_32, 0.0, 1.0))
    d = builder.fsub(z, m, flags=_CONTRACT)
    e = _exp2_vector(builder, builder.fmul(d, log2e, flags=_CONTRACT))
    at_max = builder.fcmp_ordered("==", d, zero)
    s_next = builder.fadd(s, builder.select(at_max, zero, e), flags=_CONTRACT)
    return d, s_next, builder.fadd(ties, builder.select(at_max, one, zero), flags=_CONTRACT)


def turned_ties_accepts(bz, c, m, s, ties) -> bool:
    """Whether :func:`turned_sum_exp2_ties` takes these Numba types."""
    return _same_float_rows([bz], [m, s, ties]) and isinstance(c, types.Integer)


@intrinsic
def turned_sum_exp2_ties(typingctx, bz, c, m, s, ties):
    """For every column ``r`` of a turned block ``bz`` (as :func:`turned_sum_exp2`), with
    ``d = bz[j, r] - m[r]`` over the classes in order: ``s[r] = sum 2**(d log2 e)`` over the
    terms with ``d != 0`` and ``ties[r]`` the number of terms with ``d == 0`` (each exactly
    1).  AVX-512 or AVX2; nothing here checks the sizes."""
    if not turned_ties_accepts(bz, c, m, s, ties):
        return None

    def codegen(context, builder, signature, args):
        def step(xs, cols, accs):
            return list(_below_max_step(builder, xs[0], cols[0], accs[0], accs[1])[1:])

        return _turned_loops(context, builder, signature, args, [0], 1, [2], [3, 4], step)

    return types.void(bz, c, m, s, ties), codegen


@intrinsic
def turned_dense_sums(typingctx, bz, bt, c, m, s, ties, tz):
    """For every column ``r`` of turned blocks of logits ``bz`` and targets ``bt`` (as
    :func:`turned_sum_exp2`), with ``d = bz[j, r] - m[r]`` over the classes in order:
    ``s[r] = sum 2**(d log2 e)`` over the terms with ``d != 0``, ``ties[r]`` the number of
    terms with ``d == 0`` (each exactly 1), ``tz[r] = sum t d`` over the terms with ``t !=
    0`` (``0 * -inf`` is never formed).  AVX-512 or AVX2; nothing here checks the sizes."""
    if not turned_dense_accepts(bz, bt, c, m, s, ties, tz):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        zero = _splat(ir, _vector_of(signature.args[0].dtype), 0.0)

        def step(xs, cols, accs):
            z, t = xs
            d, s_next, ties_next = _below_max_step(builder, z, cols[0], accs[0], accs[1])
            weighed = builder.fcmp_unordered("!=", t, zero)  # NaN targets count (and show)
            td = builder.fmul(t, d, flags=_CONTRACT)
            tz_next = builder.fadd(accs[2], builder.select(weighed, td, zero), flags=_CONTRACT)
            return [s_next, ties_next, tz_next]

        return _turned_loops(context, builder, signature, args, [0, 1], 2, [3], [4, 5, 6], step)

    return types.void(bz, bt, c, m, s, ties, tz), codegen


# ------------------------------------------------------------ log1p of a block's sums
#: ``vgetmantps`` immediate: mantissa in [3/4, 3/2) (bits 1:0 = 11), the source's sign.
_MANT_3_4 = 0x03
#: The series of ``_math.log_f32``'s ``R(s**2)``, highest term first.
_R_LOG = (2.0 / 13.0, 2.0 / 11.0, 2.0 / 9.0, 2.0 / 7.0, 2.0 / 5.0, 2.0 / 3.0)


def _ops(builder, vf):
    """Constant splats and contract-flagged arithmetic on float vectors of type ``vf``."""
    from llvmlite import ir

    return (
        lambda v: _splat(ir, vf, v),
        lambda a, b: builder.fadd(a, b, flags=_CONTRACT),
        lambda a, b: builder.fsub(a, b, flags=_CONTRACT),
        lambda a, b: builder.fmul(a, b, flags=_CONTRACT),
    )


def _log_core(builder, u):
    """IR of ``log(u)`` for a vector of positive finite float32 values: 16 lanes by
    :func:`_log_core_avx512`, 8 by :func:`_log_core_avx2`."""
    if u.type.count == LANES_AVX2:
        return _log_core_avx2(builder, u)
    return _log_core_avx512(builder, u)


def _log_series(builder, e, m):
    """IR of ``e ln 2 + log(m)`` from the exponent ``e`` (float) and the mantissa ``m`` near 1,
    ``_math.log_f32``'s series in its order (``f = m - 1`` exact, ``s = f / (2 + f)``)."""
    c, add, sub, mul = _ops(builder, m.type)
    f = sub(m, c(1.0))  # exact
    s = builder.fdiv(f, add(f, c(2.0)), flags=_CONTRACT)
    z = mul(s, s)
    r = c(_R_LOG[0])
    for coef in _R_LOG[1:]:
        r = add(mul(r, z), c(coef))
    r = mul(r, z)
    hf2 = mul(mul(c(0.5), f), f)
    inner = sub(hf2, add(mul(s, add(hf2, r)), mul(e, c(_LN2LO_32L))))
    return sub(mul(e, c(_LN2HI_32L)), sub(inner, f))


def _log_core_avx512(builder, u):
    """IR of ``log(u)`` for a ``<16 x float>`` of positive finite values, as
    ``_math.log_f32`` computes it (``e ln 2 + 2 atanh(s)``), with the exponent and the
    mantissa from ``vgetexpps`` / ``vgetmantps`` instead of integer bit work (subnormals
    included): ``m`` in [3/4, 3/2), so ``|s| <= 0.2`` instead of 0.1716; the series' next term
    is then 2e-11 relative."""
    from llvmlite import ir
    from numba.core import cgutils

    vf = u.type
    i16, i32 = ir.IntType(16), ir.IntType(32)
    module = builder.module
    unmasked = [ir.Constant(vf, ir.Undefined), ir.Constant(i16, -1)]
    rounding = [ir.Constant(i32, _CUR_DIRECTION)]
    getexp = cgutils.get_or_insert_function(
        module, ir.FunctionType(vf, [vf, vf, i16, i32]), "llvm.x86.avx512.mask.getexp.ps.512"
    )
    getmant = cgutils.get_or_insert_function(
        module,
        ir.FunctionType(vf, [vf, i32, vf, i16, i32]),
        "llvm.x86.avx512.mask.getmant.ps.512",
    )
    c, add = _ops(builder, vf)[:2]
    m = builder.call(getmant, [u, ir.Constant(i32, _MANT_3_4)] + unmasked + rounding)
    k = builder.call(getexp, [u] + unmasked + rounding)  # floor(log2 u)
    below_one = builder.fcmp_ordered("<", m, c(1.0))  # u = m 2**(k + 1)
    e = add(k, builder.select(below_one, c(1.0), c(0.0)))
    return _log_series(builder, e, m)


def _log_core_avx2(builder, u):
    """IR of ``log(u)`` for an ``<8 x float>`` of non-negative finite values, the operations of
    ``_math.log_f32`` in its order (each lane the scalar code's value, bit for bit; ``log 0`` is
    left to the callers' selects): subnormals lifted by ``2**23``, the exponent and the
    mantissa in ``[1, 2)`` from the bits in 32-bit integer lanes, halved above ``sqrt 2``.
    Written out because LLVM vectorised the scalar code's bit work in 64-bit integer lanes
    (Numba's integers), half the lanes per instruction."""
    from llvmlite import ir

    vf = u.type
    vi = ir.VectorType(ir.IntType(32), vf.count)
    c, add, sub, mul = _ops(builder, vf)
    ci = lambda v: _splat(ir, vi, v)  # noqa: E731
    small = builder.fcmp_ordered("<", u, c(float(_FLT_MIN)))
    xs = builder.select(small, mul(u, c(float(_TWO23))), u)
    bits = builder.bitcast(xs, vi)
    e = builder.sub(builder.and_(builder.lshr(bits, ci(23)), ci(0xFF)), ci(127))
    e = builder.sub(e, builder.select(small, ci(23), ci(0)))
    m = builder.bitcast(builder.or_(builder.and_(bits, ci(0x007FFFFF)), ci(0x3F800000)), vf)
    big = builder.fcmp_ordered(">", m, c(float(_SQRT2_32)))
    m = builder.select(big, mul(m, c(0.5)), m)
    e = builder.add(e, builder.select(big, ci(1), ci(0)))
    return _log_series(builder, builder.sitofp(e, vf), m)


def _log1p_vector(builder, x):
    """IR of ``log1p(x)`` for a float32 vector as ``_math.log1p_f32`` computes it, the log
    of ``u = 1 + x`` by :func:`_log_core`."""
    c, add, sub, mul = _ops(builder, x.type)
    u = add(c(1.0), x)
    d = sub(u, c(1.0))  # exact: what rounding 1 + x lost is x - d
    log_u = _log_core(builder, u)
    # log1p(x) = log(u) x / (u - 1) corrects the rounding of u; u == 1 means log1p(x) = x
    ratio = builder.fdiv(x, d, flags=_CONTRACT)
    y = builder.select(builder.fcmp_ordered("!=", d, c(0.0)), mul(log_u, ratio), x)
    return builder.select(builder.fcmp_ordered("==", u, c(float("inf"))), u, y)


def _log_vector(builder, x):
    """IR of ``log(x)`` for a float32 vector: :func:`_log_core`, and ``_math.log_f32``'s
    values at the edges (``log(x < 0) = NaN``, ``log inf = inf``, NaN kept; ``log 0 = -inf``,
    which in 16 lanes needs no select: ``vgetexpps(0) = -inf`` carries through the
    arithmetic, for -0 too)."""
    c = _ops(builder, x.type)[0]
    y = _log_core(builder, x)
    if x.type.count == LANES_AVX2:  # the bits of 0 give a finite log: -150 ln 2
        y = builder.select(builder.fcmp_ordered("==", x, c(0.0)), c(float("-inf")), y)
    y = builder.select(builder.fcmp_ordered("<", x, c(0.0)), c(float("nan")), y)
    y = builder.select(builder.fcmp_ordered("==", x, c(float("inf"))), x, y)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)


def _lane_loop(builder, n, name, step):
    """IR of ``for g in range(0, n, lanes): step(g)`` (``n`` a multiple of 16)."""
    from llvmlite import ir

    i64 = ir.IntType(64)
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    g = builder.phi(i64)
    g.add_incoming(ir.Constant(i64, 0), entry)
    builder.cbranch(builder.icmp_signed("<", g, n), body, done)
    builder.position_at_end(body)
    step(g)
    g.add_incoming(builder.add(g, ir.Constant(i64, vector_lanes())), builder.block)
    builder.branch(head)
    builder.position_at_end(done)


def _vector_at(builder, data, offset):
    """Pointer to the float32 vector at ``data[offset]``."""
    vf = _float_vector()
    return builder.bitcast(builder.gep(data, [offset]), vf.as_pointer())


def log1p_rows_accepts(s, ties, out) -> bool:
    """Whether :func:`log1p_rows_f32` takes these Numba types."""
    return f32_rows_accept(s, ties, out)


@intrinsic
def log1p_rows_f32(typingctx, s, ties, out):
    """``out[r] = log1p(s[r] + (ties[r] - 1))`` for every ``r`` of ``out`` (float32, its length
    a multiple of 16, ``s`` and ``ties`` at least as long): the last step of the short-row
    kernels over a whole block buffer (rows past the block's are computed and not used).
    AVX-512 or AVX2 (:func:`has_vector_exp`); nothing here checks the sizes."""
    if not log1p_rows_accepts(s, ties, out):
        return None

    def codegen(context, builder, signature, args):
        from llvmlite import ir

        sums, counts, dst = (
            context.make_array(signature.args[k])(context, builder, args[k]) for k in range(3)
        )

        def step(g):
            one = _splat(ir, _float_vector(), 1.0)
            ties_less_one = builder.fsub(
                builder.load(_vector_at(builder, counts.data, g), align=4), one, flags=_CONTRACT
            )
            total = builder.load(_vector_at(builder, sums.data, g), align=4)
            x = builder.fadd(total, ties_less_one, flags=_CONTRACT)
            builder.store(_log1p_vector(builder, x), _vector_at(builder, dst.data, g), align=4)

        _lane_loop(builder, builder.extract_value(dst.shape, 0), "log1p", step)
        return context.get_dummy_value()

    return types.void(s, ties, out), codegen


def log_rows_accepts(x, out) -> bool:
    """Whether :func:`log_rows_f32` takes these Numba types."""
    return f32_rows_accept(x, out)


@intrinsic
def log_rows_f32(typingctx, x, out):
    """``out[g] = log(x[g])`` for every ``g`` of ``out`` (float32, its length a multiple of 16,
    ``x`` at least as long; ``out`` may be ``x``): the logs of a turned block of clipped
    probabilities in one loop.  AVX-512 or AVX2 (:func:`has_vector_exp`); nothing here
    checks the sizes."""
    if not log_rows_accepts(x, out):
        return None

    def codegen(context, builder, signature, args):

        src, dst = (
            context.make_array(signature.args[k])(context, builder, args[k]) for k in (0, 1)
        )

        def step(g):
            y = _log_vector(builder, builder.load(_vector_at(builder, src.data, g), align=4))
            builder.store(y, _vector_at(builder, dst.data, g), align=4)

        _lane_loop(builder, builder.extract_value(dst.shape, 0), "log", step)
        return context.get_dummy_value()

    return types.void(x, out), codegen
