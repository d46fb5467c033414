"""xent: fast cross-entropy losses on the CPU with Numba kernels.

* sparse categorical cross-entropy (integer labels) by a direct index gather;
* categorical cross-entropy (one-hot or soft targets) by a fused one-pass reduction;

with the semantics of Keras 3 (functions and loss objects), PyTorch (``cross_entropy``,
``nll_loss``), scikit-learn (``log_loss``) and optax (``softmax_cross_entropy``,
``softmax_cross_entropy_with_integer_labels``), all on the same kernels.  See the README for the
semantics, the command line (``xent``) and the benchmarks.
"""

from xent._engine import threading_layer
from xent._evaluate import Evaluation, evaluate
from xent._keras_api import categorical_crossentropy, sparse_categorical_crossentropy
from xent._keras_losses import CategoricalCrossentropy, SparseCategoricalCrossentropy
from xent._optax_api import (
    softmax_cross_entropy,
    softmax_cross_entropy_with_integer_labels,
)
from xent._sklearn_api import log_loss
from xent._threading import get_num_threads, max_threads, set_num_threads
from xent._torch_api import TorchInputError, cross_entropy, nll_loss, value_and_grad

__version__ = "0.1.0"

__all__ = [
    "Evaluation",
    "CategoricalCrossentropy",
    "SparseCategoricalCrossentropy",
    "TorchInputError",
    "categorical_crossentropy",
    "cross_entropy",
    "evaluate",
    "log_loss",
    "nll_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "get_num_threads",
    "max_threads",
    "set_num_threads",
    "sparse_categorical_crossentropy",
    "threading_layer",
    "value_and_grad",
]
