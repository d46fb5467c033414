"""Helpers shared by the tests: tolerances against the float64 reference, memory layouts of
one array, and running a computation under each thread count."""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
import pytest

#: ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` of CPUs without AVX-512, for fresh processes
#: that stand in for them on any x86-64 machine: Haswell (AVX2 and FMA) and Sandy Bridge
#: (AVX only).
STAND_INS = {
    "haswell": (
        "+64bit,+avx,+avx2,+bmi,+bmi2,+cx16,+f16c,+fma,+lzcnt,+movbe,"
        "+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave"
    ),
    "sandybridge": "+64bit,+avx,+cx16,+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave",
}


def stand_in_env(cpu: str, cache_dir) -> dict:
    """Environment of a fresh process compiling for ``cpu`` (a key of :data:`STAND_INS`) into
    its own cache."""
    return {
        "NUMBA_CPU_NAME": cpu,
        "NUMBA_CPU_FEATURES": STAND_INS[cpu],
        "NUMBA_CACHE_DIR": str(cache_dir),
    }


def tolerances(dtype):
    """(rtol, atol) for comparing a kernel against the float64 reference."""
    if np.dtype(dtype) == np.float64:
        return 1e-12, 1e-12
    return 1e-5, 1e-5


def layouts(a):
    """The same 2-D values in different memory layouts (read-only views or copies)."""
    ro = a.copy()
    ro.flags.writeable = False
    rev = np.ascontiguousarray(a[::-1])[::-1]  # negative strides
    wide = np.zeros((a.shape[0], a.shape[1] * 2), a.dtype)
    wide[:, ::2] = a
    return {
        "C": a,
        "F": np.asfortranarray(a),
        "negative-strides": rev,
        "strided-columns": wide[:, ::2],
        "read-only": ro,
        "byte-swapped": a.astype(a.dtype.newbyteorder(">")),
    }


def thread_counts() -> list[int]:
    """1, 2 and all threads (distinct); skips the test where only one thread exists, since a
    thread-count invariance cannot be observed there."""
    top = numba.config.NUMBA_NUM_THREADS
    if top < 2:
        pytest.skip("NUMBA_NUM_THREADS=1: one thread cannot show thread-count invariance")
    return sorted({1, 2, top})


@contextmanager
def threads(n: int):
    """Run the block on ``n`` threads, then restore the caller's count."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def per_thread_count(compute):
    """``[compute() on 1 thread, on 2, on all]``; each result must then be compared."""
    out = []
    for n in thread_counts():
        with threads(n):
            out.append(compute())
    return out


def scores(rng, shape, dtype, from_logits, ties):
    """Logits (or softmax probabilities) for the evaluation tests; with ``ties`` few distinct
    values, so that many classes tie and the tie policy decides ranks."""
    if ties:
        z = rng.integers(0, 4, shape).astype(np.float64)
    else:
        z = rng.standard_normal(shape) * 2
    if not from_logits:
        z = np.exp(z)
        z /= z.sum(-1, keepdims=True)
    return z.astype(dtype)
