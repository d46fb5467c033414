"""The one door to ``xent.kernels``: canonical 2-D inputs in, per-row losses out.

Front ends never call a kernel directly; they ask for row losses here, so a kernel can be
rewritten for speed without touching any front end.
"""

from __future__ import annotations

import numba
import numpy as np

from xent import kernels
from xent._threading import ensure_threading_layer, serial_only

#: The label marking rows that do not count (ignored class / index), as the kernels read it.
IGNORED = kernels.IGNORED

#: Keras's ``backend.epsilon()``: the default clipping bound for probabilities, shared by the
#: Keras front end and evaluation.
EPSILON = 1e-7


def _probe():
    kernels.row_sums(np.zeros((2, 2)), np.empty(2))


def ready() -> str:
    """Load a safe threading layer before the first kernel launch; return its name."""
    return ensure_threading_layer(_probe)


def threading_layer() -> str:
    """The Numba threading layer xent runs on (``"tbb"`` or ``"omp"``), loading it if needed.

    On x86-64 Linux (and where the ``tbb`` wheel installs) this is ``"tbb"`` unless
    ``NUMBA_THREADING_LAYER`` chooses otherwise; see README, "Threads, processes and bad
    input".

    Examples
    --------
    >>> import xent
    >>> xent.threading_layer() in ("tbb", "omp")
    True
    """
    return ready()


def row_sums(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The bandwidth baseline: ``out[i] = sum(x[i])`` by a plain parallel Numba loop."""
    ready()
    return kernels.row_sums(x, out)


def _kernel(parallel_kernel):
    """The kernel to launch: its serial build in a child forked from an OpenMP parent."""
    return kernels.serial(parallel_kernel) if serial_only() else parallel_kernel


def _outputs(rows: np.ndarray, want_lse: bool):
    n = rows.shape[0]
    return np.empty(n, rows.dtype), np.empty(n if want_lse else 0, rows.dtype)


def _clip_bounds(dtype, epsilon: float):
    t = np.dtype(dtype).type
    return t(epsilon), t(1.0) - t(epsilon)


#: Rows at least this long are split over the threads when there are fewer rows than threads.
LONG_ROW = 131_072  # measured: shorter rows lose more to the parallel launch than they gain
_NO_WEIGHTS = np.empty(0, np.float64)
_NO_MASK = np.empty((0, 0), np.bool_)


def _rows(
    kind,
    rows,
    second,
    *,
    from_logits,
    smoothing=0.0,
    epsilon=EPSILON,
    renormalize=True,
    want_lse=False,
    class_weights=None,
    softcap=0.0,
    class_mask=None,
):
    ready()
    want_lse = want_lse and from_logits
    loss, lse = _outputs(rows, want_lse)
    weights = _NO_WEIGHTS if class_weights is None else class_weights
    if from_logits:
        mask = _NO_MASK if class_mask is None else class_mask
        plain = softcap == 0.0 and class_mask is None
        short = rows.shape[1] * rows.itemsize <= kernels.SHORT_ROW_BYTES
        # fewer rows than threads: split each long row over the threads instead
        # (the split kernels launch parallel loops from inside; a serial process skips them)
        few_long = (
            rows.shape[0] < numba.get_num_threads()
            and rows.shape[1] >= LONG_ROW
            and not serial_only()
        )
        if kind == "sparse" and plain and few_long:
            kernels.sparse_logits_long_rows(rows, second, float(smoothing), weights, loss, lse)
        elif kind == "dense" and plain and few_long and class_weights is None:
            kernels.dense_logits_long_rows(rows, second, float(smoothing), loss, lse)
        elif kind == "dense" and plain and short:
            # many short rows: turned row blocks
            _kernel(kernels.dense_logits_short_rows)(
                rows, second, float(smoothing), weights, loss, lse
            )
        elif kind == "dense":
            _kernel(kernels.dense_logits)(
                rows, second, float(smoothing), weights, float(softcap), mask, loss, lse
            )
        elif plain and short:
            # many short rows: turned row blocks
            _kernel(kernels.sparse_logits_short_rows)(
                rows, second, float(smoothing), weights, loss, lse
            )
        else:
            _kernel(kernels.sparse_logits)(
                rows, second, float(smoothing), weights, float(softcap), mask, loss, lse
            )
    else:
        if class_weights is not None or softcap or class_mask is not None:
            raise AssertionError("class weights, soft-capping and masks need logits")
        kernel = _kernel(kernels.sparse_probs if kind == "sparse" else kernels.dense_probs)
        lo, hi = _clip_bounds(rows.dtype, epsilon)
        kernel(rows, second, float(smoothing), lo, hi, bool(renormalize), loss)
    return loss, (lse if want_lse else None)


def sparse_rows(rows, labels, **options):
    """Per-row sparse cross-entropy (and log-sum-exp of logits on request).

    ``rows``: float32/float64 ``(N, C)``; ``labels``: int64 ``(N,)`` validated, ``IGNORED``
    for rows that give 0.  Options (keyword-only): ``from_logits``, ``smoothing``,
    ``epsilon``, ``renormalize`` (probabilities); ``want_lse``, ``class_weights`` (float64
    ``(C,)``), ``softcap`` (0 for none), ``class_mask`` (bool ``(N, C)``, any strides)
    (logits).  Returns ``(loss, lse)``, both of ``rows.dtype``; ``lse`` is ``None`` unless
    requested (logits only).
    """
    return _rows("sparse", rows, labels, **options)


def dense_rows(rows, targets, **options):
    """Per-row categorical cross-entropy against target rows of the same shape; options as
    :func:`sparse_rows` (class weights multiply the targets, as PyTorch does)."""
    return _rows("dense", rows, targets, **options)


def probability_checks(rows):
    """``(row sums in float64, per-row count of entries outside [0, 1] or NaN)``."""
    ready()
    n = rows.shape[0]
    sums, bad = np.empty(n), np.empty(n, np.int64)
    _kernel(kernels.probability_rows)(rows, sums, bad)
    return sums, bad


def evaluation_rows(kind, pred, second, *, from_logits, epsilon):
    """Per-row loss and rank of the true class from the fused evaluation kernel.

    ``kind`` is ``"sparse"`` (``second``: int64 labels, ``IGNORED`` rows give loss 0 and rank
    -1) or ``"dense"`` (``second``: target rows; the true class is each row's first arg-max).
    Returns ``(loss of pred.dtype, rank int64)``.
    """
    ready()
    n = pred.shape[0]
    lo, hi = _clip_bounds(pred.dtype, epsilon)
    loss, rank = np.empty(n, pred.dtype), np.empty(n, np.int64)
    kernel = kernels.evaluate_sparse if kind == "sparse" else kernels.evaluate_dense
    _kernel(kernel)(pred, second, bool(from_logits), lo, hi, _NO_WEIGHTS, loss, rank)
    return loss, rank
