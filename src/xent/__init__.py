"""xent: fast cross-entropy losses on the CPU with Numba kernels.

* sparse categorical cross-entropy (integer labels) by a direct index gather;
* categorical cross-entropy (one-hot or soft targets) by a fused one-pass reduction;

with the semantics of Keras 3 (functions and loss objects).  See the README for the
semantics, the command line (``xent``) and the benchmarks.
"""

from xent._keras_api import (
    CategoricalCrossentropy,
    SparseCategoricalCrossentropy,
    categorical_crossentropy,
    sparse_categorical_crossentropy,
)
from xent._threading import get_num_threads, max_threads, set_num_threads, threading_layer

__version__ = "0.1.0"

__all__ = [
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "categorical_crossentropy",
    "get_num_threads",
    "max_threads",
    "set_num_threads",
    "sparse_categorical_crossentropy",
    "threading_layer",
]
