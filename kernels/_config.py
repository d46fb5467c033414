"""Compilation options shared by every kernel, in one place.

``FASTMATH`` lets LLVM reassociate float sums (so reductions vectorise) and fuse
multiply-adds.  It deliberately leaves out ``nnan`` and ``ninf``: with those, LLVM may
assume no NaN or infinity exists and fold away the very checks that keep ``-inf``
logits and NaN rows correct.

``error_model="numpy"`` drops the ZeroDivisionError branch that Python semantics put on
every float division; that branch alone stops LLVM from vectorising a loop.
"""

FASTMATH = frozenset({"reassoc", "contract", "nsz"})

#: Options for the scalar math helpers (inlined into the loops by LLVM).  Only
#: ``contract``: reassociation would undo the exact range reduction (Cody-Waite) and the
#: evaluation order of the polynomials.  Flags live on each instruction, so the loops
#: around an inlined helper keep their own.
SCALAR = dict(fastmath={"contract"}, error_model="numpy", cache=True)

#: Options for the parallel row kernels.  ``cache=True`` writes compiled machine code
#: next to the sources (or to ``NUMBA_CACHE_DIR``) so that a fresh process loads it
#: instead of recompiling; see README "Compilation and caching".
#: Options for the per-row loops (reductions along a row must reassociate to vectorise).
ROW = dict(fastmath=set(FASTMATH), error_model="numpy", cache=True)

#: Options for the parallel kernels themselves.  Their bodies only combine per-row
#: statistics (``log s - (z_y - m)`` and the like), where reassociation is wrong: it
#: would turn that into ``(log s + m) - z_y`` and lose everything to cancellation for
#: large logits.  The vectorised reductions live in ``ROW`` helpers, whose instructions
#: keep their own flags when inlined.
PARALLEL = dict(SCALAR, parallel=True, nogil=True)
