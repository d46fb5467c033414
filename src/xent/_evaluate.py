"""``xent.evaluate``: loss, accuracy, top-k accuracy and perplexity in one pass over the
predictions, streamed in row blocks so that inputs larger than memory work.

Every block runs one fused kernel (per row: the loss and the rank of the true class) and
contributes float64 partial sums; the sums of all blocks are added in order, so the
result does not depend on the block size beyond the rounding of that final addition.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from xent import _dask
from xent._engine import EPSILON, evaluation_rows
from xent._frameworks import is_bfloat16
from xent._inputs import (
    as_array,
    as_labels,
    as_predictions,
    as_sample_weight,
    as_targets,
    check_ignore_class,
)
from xent._numbers import check_number, is_number
from xent._streaming import PageRelease, Progress

#: Working memory a block of predictions (and dense labels) may take by default.
DEFAULT_BLOCK_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one pass over a prediction set (all weighted by ``sample_weight``).

    ``loss = sum_loss / sum_weight`` (Keras's cross-entropy per row, its weighted mean),
    ``perplexity = exp(loss)``, ``accuracy`` the weighted share of rows whose true class
    ranks first, ``top_k_accuracy[k]`` of rows where it ranks among the first ``k``;
    ``count`` is the number of rows counted (``ignore_class`` rows are not).
    """

    loss: float
    accuracy: float
    top_k_accuracy: dict = field(default_factory=dict)
    perplexity: float = float("nan")
    count: int = 0
    sum_loss: float = 0.0
    sum_weight: float = 0.0

    def to_dict(self) -> dict:
        """Plain ``dict`` (JSON-serialisable: top-k keys become strings)."""
        d = asdict(self)
        d["top_k_accuracy"] = {str(k): v for k, v in self.top_k_accuracy.items()}
        return d

    def __str__(self) -> str:
        rows = [
            ("rows counted", f"{self.count:,}"),
            ("loss (cross-entropy)", f"{self.loss:.6f}"),
            ("perplexity", f"{self.perplexity:.6g}"),
            ("accuracy", f"{self.accuracy:.6f}"),
        ]
        rows += [(f"top-{k} accuracy", f"{v:.6f}") for k, v in self.top_k_accuracy.items()]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class _Totals:
    """Float64 partial sums, added block by block in order."""

    def __init__(self, ks):
        self.ks = ks
        self.sum_loss = 0.0
        self.sum_weight = 0.0
        self.count = 0
        self.hits = {k: 0.0 for k in ks}
        self.hits1 = 0.0

    def add(self, loss, rank, weight):
        counted = rank >= 0
        w = counted.astype(np.float64) if weight is None else np.where(counted, weight, 0.0)
        # an elementwise product and a pairwise sum, not np.dot: a BLAS call leaves
        # OpenBLAS threads spinning, which halves the speed of the next Numba kernel
        self.sum_loss += float(np.sum(w * loss.astype(np.float64)))
        self.sum_weight += float(np.sum(w))
        self.count += int(np.count_nonzero(counted))
        self.hits1 += float(np.sum(w[rank == 0]))
        for k in self.ks:
            self.hits[k] += float(np.sum(w[counted & (rank < k)]))

    def merge(self, other):
        self.sum_loss += other.sum_loss
        self.sum_weight += other.sum_weight
        self.count += other.count
        self.hits1 += other.hits1
        for k in self.ks:
            self.hits[k] += other.hits[k]

    def as_vector(self):
        return np.array(
            [self.sum_loss, self.sum_weight, self.count, self.hits1]
            + [self.hits[k] for k in self.ks]
        )

    @classmethod
    def from_vector(cls, ks, v):
        t = cls(ks)
        t.sum_loss, t.sum_weight, t.count, t.hits1 = (
            float(v[0]),
            float(v[1]),
            int(v[2]),
            float(v[3]),
        )
        for j, k in enumerate(ks):
            t.hits[k] = float(v[4 + j])
        return t

    def result(self) -> Evaluation:
        with np.errstate(invalid="ignore", divide="ignore"):
            sw = np.float64(self.sum_weight)
            loss = float(np.float64(self.sum_loss) / sw) if sw else float("nan")
            acc = float(np.float64(self.hits1) / sw) if sw else float("nan")
            topk = {
                k: (float(np.float64(self.hits[k]) / sw) if sw else float("nan")) for k in self.ks
            }
        return Evaluation(
            loss=loss,
            accuracy=acc,
            top_k_accuracy=topk,
            perplexity=float(np.exp(loss)) if loss == loss else float("nan"),
            count=self.count,
            sum_loss=self.sum_loss,
            sum_weight=self.sum_weight,
        )


# ------------------------------------------------------------------ validation
def check_top_k(top_k) -> tuple:
    if is_number(top_k, integral=True):
        top_k = (top_k,)
    try:
        ks = tuple(top_k)
    except TypeError:
        raise TypeError(
            f"top_k must be an integer or a sequence of integers, got {top_k!r}"
        ) from None
    for k in ks:
        check_number(k, "top_k", integral=True, expected="a sequence of integers")
        if k < 1:
            raise ValueError(f"top_k values must be >= 1, got {k}")
    return tuple(sorted(set(int(k) for k in ks)))


def prediction_rows(y_pred, name="y_pred"):
    """The predictions as ``(rows, C)`` without copying (memory maps stay memory maps);
    byte-swapped data is converted block by block later, other dtypes are refused."""
    pred = as_predictions(y_pred, name, swapped_ok=True)
    if pred.ndim == 0:
        raise ValueError(f"{name} must have a class axis (the last), got a scalar")
    c = pred.shape[-1]
    if c == 0:
        raise ValueError(f"{name} has 0 classes (shape {pred.shape})")
    return pred.reshape(-1, c), pred.shape[:-1]


def label_kind(y_true_shape, pred_shape, label_format):
    """``"sparse"`` or ``"dense"`` from the shapes (``label_format`` overrides)."""
    if label_format not in ("auto", "sparse", "dense"):
        raise ValueError(f"label_format must be 'auto', 'sparse' or 'dense', got {label_format!r}")
    pred_shape, y_true_shape = tuple(pred_shape), tuple(y_true_shape)
    batch = pred_shape[:-1]
    sparse_ok = y_true_shape == batch or y_true_shape == batch + (1,)
    dense_ok = y_true_shape == pred_shape
    if label_format == "sparse":
        if not sparse_ok:
            raise ValueError(f"sparse labels need shape {batch}, got {y_true_shape}")
        return "sparse"
    if label_format == "dense":
        if not dense_ok:
            raise ValueError(
                f"dense labels need the predictions' shape {pred_shape}, got {y_true_shape}"
            )
        return "dense"
    if sparse_ok and dense_ok:
        raise ValueError(
            f"y_true of shape {y_true_shape} could be class indices or one-hot rows for "
            f"predictions of shape {pred_shape} (one class); pass label_format='sparse' or "
            f"label_format='dense'"
        )
    if sparse_ok:
        return "sparse"
    if dense_ok:
        return "dense"
    raise ValueError(
        f"y_true has shape {y_true_shape}; for predictions of shape {pred_shape} it must be "
        f"{batch} (class indices) or {pred_shape} (one-hot or soft rows)"
    )


# ------------------------------------------------------------------ the pass
def _weights_flat(sample_weight, batch_shape):
    if sample_weight is None:
        return None
    return as_sample_weight(sample_weight, batch_shape).reshape(-1)


def evaluate_block(pred, labels, kind, *, from_logits, ignore_class, weights, totals, row_offset=0):
    """Run the fused kernel on one block of rows and add its sums into ``totals``."""
    pred = as_predictions(pred)  # byte-swapped blocks converted here
    n, c = pred.shape
    if kind == "sparse":
        ids, _ = as_labels(
            labels, (n,), c, axis=-1, ignore_class=ignore_class, row_offset=row_offset
        )
        loss, rank = evaluation_rows("sparse", pred, ids, from_logits=from_logits, epsilon=EPSILON)
    else:
        t = as_targets(labels, pred.shape)
        loss, rank = evaluation_rows("dense", pred, t, from_logits=from_logits, epsilon=EPSILON)
    totals.add(loss, rank, None if weights is None else np.asarray(weights, np.float64))


def evaluate(
    y_true,
    y_pred,
    *,
    from_logits=False,
    top_k=(1, 5),
    sample_weight=None,
    ignore_class=None,
    batch_size=None,
    progress=False,
    label_format="auto",
):
    r"""Cross-entropy, accuracy, top-k accuracy and perplexity in one pass over ``y_pred``.

    Per row (class axis last), with :math:`r` the rank of the true class :math:`y` in a
    stable descending sort of the row (ties: the smaller index first, as
    ``np.argsort(-p, kind="stable")``; NaN scores last):

    .. math::

        \mathrm{loss} = \frac{\sum_i w_i \ell_i}{\sum_i w_i}, \quad
        \mathrm{accuracy} = \frac{\sum_i w_i [r_i = 0]}{\sum_i w_i}, \quad
        \mathrm{top}_k = \frac{\sum_i w_i [r_i < k]}{\sum_i w_i}, \quad
        \mathrm{perplexity} = e^{\mathrm{loss}}

    with :math:`\ell` Keras's (sparse) categorical cross-entropy (probabilities
    renormalised and clipped at 1e-7, or logits).  For dense labels the true class is the
    first arg-max of the label row (Keras's categorical accuracy).  The rank needs only a
    count of the classes ahead of the true one: no sort, no partition, no temporary.

    Parameters
    ----------
    y_true : array_like
        Class indices of shape ``y_pred.shape[:-1]`` (or with a trailing 1), or one-hot /
        soft label rows of ``y_pred``'s shape.  Memory maps are read block by block.
    y_pred : array_like of float16/32/64, shape ``(..., C)``
        Probabilities or logits (``from_logits=True``); ``np.memmap`` and
        ``np.load(..., mmap_mode="r")`` arrays of any size; float16 is computed in float32.
    from_logits : bool, default False
    top_k : int or sequence of int, default (1, 5)
        The ``k`` of ``top_k_accuracy`` (``k > C`` counts every row).
    sample_weight : array_like, optional
        Per-row weights (broadcast to the batch shape).
    ignore_class : int, optional
        Sparse labels equal to it are not counted at all.
    batch_size : int, optional
        Rows per block; default: blocks of about 64 MiB of predictions, so working memory
        stays bounded whatever the input size.  Resident pages of memory-mapped inputs are
        released after each block.
    progress : bool, default False
        A progress bar (tqdm when installed, else a status line) with rows/s and GB/s.
    label_format : {"auto", "sparse", "dense"}
        How to read ``y_true``; "auto" decides by shape and refuses ambiguous shapes.

    Returns
    -------
    Evaluation
        Frozen dataclass: ``loss``, ``accuracy``, ``top_k_accuracy`` (dict), ``perplexity``,
        ``count``, ``sum_loss``, ``sum_weight``; ``str()`` is a readable table,
        ``to_dict()`` a plain dict.

    See Also
    --------
    sparse_categorical_crossentropy : the per-row loss alone.

    Examples
    --------
    >>> import xent
    >>> ev = xent.evaluate([1, 2, 0], [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]],
    ...                    top_k=(1, 2))
    >>> print(ev)
    rows counted          3
    loss (cross-entropy)  0.960801
    perplexity            2.61379
    accuracy              0.666667
    top-1 accuracy        0.666667
    top-2 accuracy        0.666667

    The third row ties classes 0 and 1; the smaller index ranks first, so label 0 counts as
    correct (as ``np.argmax`` and a stable sort would have it).  The loss is the mean of
    ``-log p_y`` over the three rows:

    >>> import math
    >>> round(-(math.log(0.7) + math.log(0.2) + math.log(0.4)) / 3, 6)
    0.960801
    """
    if _dask.is_dask(y_pred) or _dask.is_dask(y_true) or _dask.is_dask(sample_weight):
        return _evaluate_dask(
            y_true,
            y_pred,
            from_logits=from_logits,
            top_k=top_k,
            sample_weight=sample_weight,
            ignore_class=ignore_class,
            label_format=label_format,
        )
    ks = check_top_k(top_k)
    ignore_class = check_ignore_class(ignore_class)
    rows, batch_shape = prediction_rows(y_pred)
    n, c = rows.shape
    y = y_true if isinstance(y_true, np.ndarray) else as_array(y_true, "y_true")
    kind = label_kind(y.shape, tuple(batch_shape) + (c,), label_format)
    if kind == "sparse":
        if y.dtype.kind not in "iuf":
            raise TypeError(f"y_true must hold integer class labels, got dtype {y.dtype}")
        labels = y.reshape(n)
    else:
        if y.dtype.kind not in "biuf" and not is_bfloat16(y.dtype):
            raise TypeError(f"y_true must hold numeric labels, got dtype {y.dtype}")
        if ignore_class is not None:
            raise ValueError("ignore_class applies to class-index labels, not to dense label rows")
        labels = y.reshape(n, c)
    weights = _weights_flat(sample_weight, batch_shape)
    if batch_size is None:
        per_row = c * rows.dtype.itemsize * (2 if kind == "dense" else 1)
        batch_size = max(1, DEFAULT_BLOCK_BYTES // per_row)
    elif not is_number(batch_size, integral=True) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    totals = _Totals(ks)
    releases = [PageRelease(rows), PageRelease(labels)]
    bar = Progress(
        n, c * rows.dtype.itemsize + labels.itemsize * (c if kind == "dense" else 1), bool(progress)
    )
    try:
        for r0 in range(0, n, int(batch_size)):
            r1 = min(n, r0 + int(batch_size))
            block, lblock = rows[r0:r1], labels[r0:r1]
            evaluate_block(
                block,
                lblock,
                kind,
                from_logits=from_logits,
                ignore_class=ignore_class,
                weights=None if weights is None else weights[r0:r1],
                totals=totals,
                row_offset=r0,
            )
            releases[0].release(block)
            releases[1].release(lblock)
            bar.update(r1 - r0)
    finally:
        bar.close()
    return totals.result()


def _evaluate_dask(
    y_true, y_pred, *, from_logits, top_k, sample_weight, ignore_class, label_format
):
    """:func:`evaluate` over dask inputs: each row block runs :func:`evaluate_block` on a
    worker, the blocks' partial sums (:class:`_Totals` as a vector) are added, and the
    metrics are formed once at the end, exactly as the streaming loop does in memory."""
    ks = check_top_k(top_k)
    ignore_class = check_ignore_class(ignore_class)
    pred_shape = tuple(y_pred.shape)
    if len(pred_shape) == 0:
        raise ValueError("y_pred must have a class axis (the last), got a scalar")
    kind = label_kind(tuple(np.shape(y_true)), pred_shape, label_format)
    if sample_weight is not None and not _dask.is_dask(sample_weight):
        sample_weight = _weights_flat(sample_weight, pred_shape[:-1])

    def block(y, p, w=None):
        totals = _Totals(ks)
        evaluate_block(
            p, y, kind, from_logits=from_logits, ignore_class=ignore_class, weights=w, totals=totals
        )
        return totals.as_vector()

    sums = _dask.partial_sums(
        block, y_true, y_pred, axis=-1, kind=kind, n_parts=4 + len(ks), sample_weight=sample_weight
    )
    return _Totals.from_vector(ks, np.asarray(sums.compute())).result()
