"""Numba kernels of xent, installed as ``xent.kernels``.

A kernel sees only validated, correctly typed 2-D arrays (rows x classes, any strides)
(float32, float64, or 16-bit floats as their bits: ``_half``) and writes one value per
row; all policy (dtypes, shapes, label ranges, reductions)
lives in the ``xent`` wrappers.  Labels are int64 with ``IGNORED`` (-1) marking rows that
do not count.  The kernels never read outside their arrays, even if handed a label out of
range (that row gets NaN), but the wrappers validate before calling them.
"""

# not kernels (kept out of __all__): the vector-width probe in _engine compiles with these
from ._config import ROW as ROW_OPTIONS  # noqa: F401
from ._half import BFLOAT16_BITS, FLOAT16_BITS
from ._math import fast_exp2  # noqa: F401
from ._serial import serial
from ._simd import has_avx512, vector_lanes
from .baseline import EXP_FLOOR_PIECE, exp_floor, row_scale, row_sums
from .evaluate import evaluate_dense, evaluate_sparse, evaluation_sums
from .grad import (
    dense_logits_grad,
    dense_short_rows_grad,
    sparse_logits_grad,
    sparse_short_rows_grad,
)
from .long_rows import dense_logits_long_rows, sparse_logits_long_rows
from .probs import (
    dense_probs,
    dense_probs_short_rows,
    probability_rows,
    sparse_probs,
    sparse_probs_short_rows,
)
from .reduce import float64_total, integer_range
from .rows import ROW_CHUNKS, dense_logits, sparse_logits
from .short_rows import SHORT_ROW_BYTES, dense_logits_short_rows, sparse_logits_short_rows
from .stream import IGNORED

__all__ = [
    "BFLOAT16_BITS",
    "FLOAT16_BITS",
    "IGNORED",
    "ROW_CHUNKS",
    "SHORT_ROW_BYTES",
    "dense_logits",
    "dense_logits_grad",
    "dense_short_rows_grad",
    "dense_logits_long_rows",
    "dense_logits_short_rows",
    "dense_probs",
    "dense_probs_short_rows",
    "evaluate_dense",
    "evaluate_sparse",
    "evaluation_sums",
    "probability_rows",
    "EXP_FLOOR_PIECE",
    "exp_floor",
    "float64_total",
    "has_avx512",
    "integer_range",
    "row_scale",
    "row_sums",
    "serial",
    "sparse_logits",
    "sparse_logits_grad",
    "sparse_short_rows_grad",
    "sparse_logits_long_rows",
    "sparse_logits_short_rows",
    "sparse_probs",
    "sparse_probs_short_rows",
    "vector_lanes",
]
