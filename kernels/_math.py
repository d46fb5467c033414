"""Vectorisable ``exp`` and ``log`` for float32 and float64.

Numba calls libm for ``np.exp``/``np.log``; those are scalar calls that LLVM cannot
vectorise here (pip's llvmlite ships no SVML), which caps a loss kernel at a few GB/s.
The functions below use only arithmetic, ``floor``, integer shifts and bit casts, all of
which LLVM turns into SIMD instructions once they are inlined into a loop.

Method (both widths):

* ``exp(x) = 2**k * exp(r)`` with ``k = round(x / ln 2)``, ``r = x - k ln 2`` (Cody-Waite
  split of ``ln 2``), ``|r| <= ln(2)/2``; ``exp(r)`` by its Taylor polynomial (degree 7
  in float32, 13 in float64: truncation error below 1e-8 / 1e-17 relative).  ``2**k`` is
  added to the exponent bits of the polynomial's value.  Results below the smallest
  normal number are flushed to 0 (as FTZ hardware does): a loss never needs them.
* ``log(x) = e ln 2 + log(1 + f)`` with ``x = 2**e (1 + f)``, ``1 + f`` in
  ``[sqrt(1/2), sqrt(2))`` read from the bits; ``log(1 + f) = 2 atanh(s)``,
  ``s = f / (2 + f)``, arranged as ``f - (f**2/2 - s (f**2/2 + R(s**2)))`` so that the
  exact ``f`` carries the leading bits (``|s| <= 0.1716``; ``R`` has 6 terms in float32,
  12 in float64).  Subnormal inputs are scaled up first.

Special values are handled with selects, not branches, so they stay vectorisable:
``exp(-inf) = 0``, ``exp(+inf) = inf``, ``exp(nan) = nan``; ``log(0) = -inf``,
``log(x<0) = nan``, ``log(inf) = inf``, ``log(nan) = nan``; subnormals are exact enough.
Measured accuracy (``tests/test_math.py``): within 2 ulp of libm over the ranges the
kernels use.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._bits import bits_from_f32, bits_from_f64, f32_from_bits, f64_from_bits
from ._config import SCALAR as _OPTS

_OVERLOAD_OPTS = {k: v for k, v in _OPTS.items() if k != "cache"}


# ---------------------------------------------------------------- float32 constants
_F32 = np.float32
_LOG2E_32 = _F32(1.44269504088896341)
_LN2HI_32 = _F32(0.693359375)  # few mantissa bits: k * hi is exact
_LN2LO_32 = _F32(-2.12194440e-4)
_EXP_LO_32 = _F32(-88.0)  # clamp so that k stays a small integer; out-of-range x are
_EXP_HI_32 = _F32(88.8)  # replaced by 0 / inf below
_EXP_ZERO_32 = _F32(-87.33654)  # ln(FLT_MIN): below, the result is flushed to 0
_EXP_INF_32 = _F32(88.72283)  # ln(FLT_MAX): above, the result is inf
_SQRT2_32 = _F32(1.41421356)
_LN2HI_32L = _F32(0.693145751953125)  # ln 2 split for log's e*ln2
_LN2LO_32L = _F32(1.428606765330187e-06)
_TWO23 = _F32(8388608.0)
_FLT_MIN = _F32(1.17549435e-38)

# ---------------------------------------------------------------- float64 constants
_LOG2E_64 = 1.4426950408889634
_LN2HI_64 = 6.93145751953125e-1
_LN2LO_64 = 1.42860682030941723212e-6
_EXP_LO_64 = -709.0
_EXP_HI_64 = 709.9
_EXP_ZERO_64 = -708.3964185322641  # ln(DBL_MIN)
_EXP_INF_64 = 709.782712893384  # ln(DBL_MAX)
_LN2HI_LOG_64 = 6.93147180369123816490e-01  # ln 2 split for log's e*ln2
_LN2LO_LOG_64 = 1.90821492927058770002e-10
_SQRT2_64 = 1.4142135623730951
_TWO54 = 18014398509481984.0
_DBL_MIN = 2.2250738585072014e-308


@njit(types.float32(types.float32), **_OPTS)
def exp_f32(x):
    """``exp`` of a float32, vectorisable (see module docstring)."""
    xc = x if x > _EXP_LO_32 else _EXP_LO_32  # NaN takes the clamp; restored below
    xc = xc if xc < _EXP_HI_32 else _EXP_HI_32
    kf = np.floor(xc * _LOG2E_32 + _F32(0.5))
    r = xc - kf * _LN2HI_32 - kf * _LN2LO_32
    p = _F32(1.0 / 5040.0)
    p = p * r + _F32(1.0 / 720.0)
    p = p * r + _F32(1.0 / 120.0)
    p = p * r + _F32(1.0 / 24.0)
    p = p * r + _F32(1.0 / 6.0)
    p = p * r + _F32(0.5)
    p = p * r + _F32(1.0)
    p = p * r + _F32(1.0)
    # 2**k * p by adding k to p's exponent field: no 2**k value that could overflow
    y = f32_from_bits(bits_from_f32(p) + (np.int32(kf) << 23))
    y = _F32(0.0) if x < _EXP_ZERO_32 else y
    y = _F32(np.inf) if x > _EXP_INF_32 else y
    return x if x != x else y


@njit(types.float64(types.float64), **_OPTS)
def exp_f64(x):
    """``exp`` of a float64, vectorisable (see module docstring)."""
    xc = x if x > _EXP_LO_64 else _EXP_LO_64
    xc = xc if xc < _EXP_HI_64 else _EXP_HI_64
    kf = np.floor(xc * _LOG2E_64 + 0.5)
    r = xc - kf * _LN2HI_64 - kf * _LN2LO_64
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    y = f64_from_bits(bits_from_f64(p) + (np.int64(kf) << 52))
    y = 0.0 if x < _EXP_ZERO_64 else y
    y = np.inf if x > _EXP_INF_64 else y
    return x if x != x else y


@njit(types.float32(types.float32), **_OPTS)
def log_f32(x):
    """Natural ``log`` of a float32, vectorisable (see module docstring)."""
    sub = x < _FLT_MIN
    xs = x * _TWO23 if sub else x  # lift subnormals into the normal range
    bits = bits_from_f32(xs)
    e = ((bits >> 23) & 0xFF) - 127 - (23 if sub else 0)
    m = f32_from_bits((bits & 0x007FFFFF) | 0x3F800000)  # mantissa in [1, 2)
    big = m > _SQRT2_32
    m = m * _F32(0.5) if big else m
    ef = _F32(e + (1 if big else 0))
    f = m - _F32(1.0)  # exact
    s = f / (f + _F32(2.0))
    z = s * s
    # R = 2 z/3 + 2 z^2/5 + ...: log(1+f) = f - (hf2 - s (hf2 + R)), f carried exactly
    r = _F32(2.0 / 13.0)
    r = r * z + _F32(2.0 / 11.0)
    r = r * z + _F32(2.0 / 9.0)
    r = r * z + _F32(2.0 / 7.0)
    r = r * z + _F32(2.0 / 5.0)
    r = r * z + _F32(2.0 / 3.0)
    r = r * z
    hf2 = _F32(0.5) * f * f
    y = ef * _LN2HI_32L - ((hf2 - (s * (hf2 + r) + ef * _LN2LO_32L)) - f)
    y = _F32(-np.inf) if x == _F32(0.0) else y
    y = _F32(np.nan) if x < _F32(0.0) else y
    y = x if x == _F32(np.inf) else y
    return x if x != x else y


@njit(types.float64(types.float64), **_OPTS)
def log_f64(x):
    """Natural ``log`` of a float64, vectorisable (see module docstring)."""
    sub = x < _DBL_MIN
    xs = x * _TWO54 if sub else x
    bits = bits_from_f64(xs)
    e = ((bits >> 52) & 0x7FF) - 1023 - (54 if sub else 0)
    m = f64_from_bits((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2_64
    m = m * 0.5 if big else m
    ef = np.float64(e + (1 if big else 0))
    f = m - 1.0
    s = f / (f + 2.0)
    z = s * s
    r = 2.0 / 25.0
    r = r * z + 2.0 / 23.0
    r = r * z + 2.0 / 21.0
    r = r * z + 2.0 / 19.0
    r = r * z + 2.0 / 17.0
    r = r * z + 2.0 / 15.0
    r = r * z + 2.0 / 13.0
    r = r * z + 2.0 / 11.0
    r = r * z + 2.0 / 9.0
    r = r * z + 2.0 / 7.0
    r = r * z + 2.0 / 5.0
    r = r * z + 2.0 / 3.0
    r = r * z
    hf2 = 0.5 * f * f
    y = ef * _LN2HI_LOG_64 - ((hf2 - (s * (hf2 + r) + ef * _LN2LO_LOG_64)) - f)
    y = -np.inf if x == 0.0 else y
    y = np.nan if x < 0.0 else y
    y = x if x == np.inf else y
    return x if x != x else y


@njit(types.float32(types.float32), **_OPTS)
def log1p_f32(x):
    """``log(1 + x)`` of a float32, accurate for tiny ``x`` too, vectorisable.

    ``u = 1 + x`` is rounded; ``log(u) * x / (u - 1)`` corrects for exactly that rounding
    (``u - 1`` is exact), and ``u == 1`` means ``log1p(x) = x`` to working precision.  Needs
    ``contract``-only flags: reassociation would fold ``(1 + x) - 1`` into ``x``.
    """
    u = _F32(1.0) + x
    d = u - _F32(1.0)
    y = log_f32(u) * (x / d) if d != _F32(0.0) else x
    return u if u == _F32(np.inf) else y  # x / d would be inf / inf


@njit(types.float64(types.float64), **_OPTS)
def log1p_f64(x):
    """``log(1 + x)`` of a float64 (as :func:`log1p_f32`)."""
    u = 1.0 + x
    d = u - 1.0
    # computed for every x and chosen after: as a conditional expression around the call,
    # LLVM left float64 loops of log1p scalar (measured 46 cycles per element on Zen 4)
    y = log_f64(u) * (x / d)
    y = x if d == 0.0 else y
    return u if u == np.inf else y


@njit(types.float64(types.float64), **_OPTS)
def tanh_f64(x):
    """``tanh`` from one vectorisable exp: ``sign(x) (1 - 2 / (exp(2|x|) + 1))``.

    Used by logit soft-capping, for float32 and float64 inputs alike.  The absolute error is
    a few 1e-16 (relative accuracy is lost only for |x| < 1e-3, where the capped logit's
    absolute error, not its relative one, is what a loss sees); ``tanh(+-inf) = +-1``,
    ``tanh(nan) = nan``.
    """
    e = exp_f64(2.0 * abs(x))  # inf for |x| > 354: the quotient is then 0
    r = 1.0 - 2.0 / (e + 1.0)
    return -r if x < 0.0 else r


@njit(types.float32(types.float32), **_OPTS)
def tanh_f32(x):
    """``tanh`` of a float32 from one vectorisable float32 exp (as :func:`tanh_f64`):
    absolute error below 2e-7, which is what a soft-capped logit needs."""
    e = exp_f32(_F32(2.0) * abs(x))
    r = _F32(1.0) - _F32(2.0) / (e + _F32(1.0))
    return -r if x < _F32(0.0) else r


def _by_float_type(generic, f32, f64):
    """Make ``generic`` (a plain-Python fallback) call ``f32`` or ``f64`` inside jitted code,
    chosen at compile time by its argument's type: one registration for every ``fast_*``
    function of this module."""

    @overload(generic, jit_options=_OVERLOAD_OPTS)
    def _impl(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None

    return generic


def fast_tanh(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``tanh`` for float32 or float64 inside jitted code (absolute accuracy)."""
    return np.tanh(x)


_by_float_type(fast_tanh, tanh_f32, tanh_f64)


# ------------------------------------------------------------ dtype-generic front doors
def fast_exp(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``exp`` for float32 or float64 inside jitted code (dispatch at compile time)."""
    return np.exp(x)


_by_float_type(fast_exp, exp_f32, exp_f64)


def fast_log(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``log`` for float32 or float64 inside jitted code (dispatch at compile time)."""
    return np.log(x)


_by_float_type(fast_log, log_f32, log_f64)


def as_type_of(value, like):  # pragma: no cover - replaced by the overload
    """``value`` converted to the float type of ``like`` (keeps float32 loops float32)."""
    return type(like)(value)


def fast_log1p(x):  # pragma: no cover - replaced by the overload inside jitted code
    """``log1p`` for float32 or float64 inside jitted code (dispatch at compile time)."""
    return np.log1p(x)


_by_float_type(fast_log1p, log1p_f32, log1p_f64)


@overload(as_type_of, jit_options=_OVERLOAD_OPTS)
def _as_type_of_impl(value, like):
    if like == types.float32:
        return lambda value, like: np.float32(value)
    if like == types.float64:
        return lambda value, like: np.float64(value)
    return None


# ------------------------------------------------------------------ 2**u for sums of exps
# For log-sum-exp the kernels sum 2**u with u = (z - M) * log2(e) and M a guessed shift.
# This form needs no Cody-Waite step: rounding u to an integer k is one add of a "magic"
# constant (k + bias lands in the low mantissa bits, read back through the bit pattern as
# 2**k), and 2**(u - k) on [-1/2, 1/2] is one polynomial.  u is clamped to [-127, 64]: at
# k = -127 the scale's bits are all 0, an exact 0, so every term below that is 0 at no extra
# cost (a row of one finite logit then has a loss of exactly 0); at k = -126 a term is a
# positive value below 2**-126, negligible in a sum whose largest term is >= 1; above 64, the
# sum is >= 2**64 and the kernel rejects the guess and recomputes with the exact maximum.
#: 1.5 * 2**23 plus the float32 exponent bias: ``u + _MAGIC32`` rounds u to an integer k and
#: leaves ``k + 127`` in the low mantissa bits, so ``bits << 23`` is the bit pattern of 2**k.
_MAGIC32 = _F32(12582912.0 + 127.0)
#: 1.5 * 2**52 plus the float64 exponent bias (as ``_MAGIC32``).
_MAGIC64 = 6755399441055744.0 + 1023.0
#: Largest exponent ``exp2_*`` is asked to represent; larger u are clamped to it.
EXP2_HI = 64.0
#: Series of ``2**f = exp(f ln 2)``, ``|f ln 2| <= 0.35``, highest power first (truncation
#: error below 2e-16); also the coefficients of ``_simd``'s float64 loops.
EXP2_POLY_F64 = (
    2.5678435993488196e-11,
    4.44553827187081e-10,
    7.054911620801121e-09,
    1.0178086009239696e-07,
    1.3215486790144305e-06,
    1.5252733804059838e-05,
    0.00015403530393381606,
    0.0013333558146428441,
    0.009618129107628477,
    0.055504108664821576,
    0.2402265069591007,
    0.6931471805599453,
    1.0,
)
#: Minimax fit of ``2**f`` on ``[-1/2, 1/2]``, highest power first (relative error 2e-9 before
#: float32 rounding); also the coefficients of ``_simd``'s AVX2 loops.
EXP2_POLY_F32 = tuple(
    _F32(c)
    for c in (
        0.00015345811589461238,
        0.0013399931215817738,
        0.009618488958647678,
        0.05550328776975576,
        0.2402264689062001,
        0.6931472057372627,
        1.0,
    )
)


@njit(**_OPTS)
def _horner(coefficients, f):
    """``sum c_k f**(n - k)`` of a tuple, highest power first, by Horner's rule (each step one
    fused multiply-add; LLVM unrolls the constant-length loop)."""
    p = coefficients[0]
    for k in range(1, len(coefficients)):
        p = p * f + coefficients[k]
    return p


@njit(types.float32(types.float32), **_OPTS)
def exp2_f32(u):
    """``2**u`` for float32 ``u`` clamped to ``[-127, 64]`` (0 at k = -127, tiny between -126.5
    and -126); NaN propagates (see above).

    ``2**k`` is built from the rounding constant's bits and multiplies the polynomial: a NaN
    ``u`` gives a NaN polynomial and so a NaN product, with no select (measured on AMD EPYC
    Zen 4: 0.76 cycles per element per core against 0.86 for adding k to the exponent bits
    and selecting NaN afterwards).  A zero scale at k = -127 gives an exact 0.
    """
    uc = _F32(-127.0) if u < _F32(-127.0) else u  # NaN fails both tests and stays NaN
    uc = _F32(EXP2_HI) if uc > _F32(EXP2_HI) else uc
    t = uc + _MAGIC32
    f = uc - (t - _MAGIC32)  # in [-1/2, 1/2]
    p = _horner(EXP2_POLY_F32, f)
    # bits(t) << 23 keeps only (k + 127) << 23 (the magic's own bits shift out of 32 bits)
    return p * f32_from_bits(bits_from_f32(t) << 23)


@njit(types.float64(types.float64), **_OPTS)
def exp2_f64(u):
    """``2**u`` for float64 ``u`` clamped to ``[-1023, 64]`` (0 at k = -1023); NaN propagates
    (built as :func:`exp2_f32`)."""
    uc = -1023.0 if u < -1023.0 else u
    uc = EXP2_HI if uc > EXP2_HI else uc
    t = uc + _MAGIC64
    f = uc - (t - _MAGIC64)
    p = _horner(EXP2_POLY_F64, f)
    return p * f64_from_bits(bits_from_f64(t) << 52)


def fast_exp2(u):  # pragma: no cover - replaced by the overload inside jitted code
    """``2**u`` for float32 or float64 inside jitted code (domain as ``exp2_f32``)."""
    return np.exp2(u)


_by_float_type(fast_exp2, exp2_f32, exp2_f64)
