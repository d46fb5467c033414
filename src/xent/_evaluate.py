"""``xent.evaluate``: loss, accuracy, top-k accuracy and perplexity in one pass over the
predictions, streamed in row blocks so that inputs larger than memory work.

Every block runs one fused kernel (per row: the loss and the rank of the true class) and
contributes float64 partial sums; the sums of all blocks are added in order, so the
result does not depend on the block size beyond the rounding of that final addition.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import numpy as np

from xent import _dask
from xent._engine import (
    EPSILON,
    EVAL_SUMS,
    EVAL_TIES,
    N_EVAL_SUMS,
    STAT_ENTROPY,
    STAT_LSE,
    STAT_PTRUE,
    evaluation_rows,
    evaluation_sums,
)
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


#: Largest class count for ``confusion=True`` (a C x C float64 matrix: 32 MiB at 2,048).
CONFUSION_MAX_CLASSES = 2048
#: Names of the per-row outputs (``per_row=True``), in the order of the ``.npz`` file.
PER_ROW_FIELDS = ("loss", "lse", "rank", "argmax", "entropy", "p_true")


def _same(a, b) -> bool:
    """Equality of two field values: arrays element by element, dicts by key, NaN equal to
    NaN (an Evaluation holds NaN for what is undefined, and is still equal to itself)."""
    if isinstance(a, dict) or isinstance(b, dict):
        return (
            isinstance(a, dict)
            and isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same(a[k], b[k]) for k in a)
        )
    if a is None or b is None:
        return a is b
    if isinstance(a, (np.ndarray, float)) or isinstance(b, (np.ndarray, float)):
        a, b = np.asarray(a), np.asarray(b)
        nan_ok = a.dtype.kind == "f" and b.dtype.kind == "f"
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=nan_ok))
    return a == b


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Metrics of one pass over a prediction set (all weighted by ``sample_weight``).

    ``loss = sum_loss / sum_weight`` (Keras's cross-entropy per row, its weighted mean),
    ``perplexity = exp(loss)``, ``accuracy`` the weighted share of rows whose true class
    ranks first, ``top_k_accuracy[k]`` of rows where it ranks among the first ``k``;
    ``count`` is the number of rows counted (``ignore_class`` rows are not).  The other
    fields are described in :func:`evaluate`.
    """

    loss: float
    accuracy: float
    top_k_accuracy: dict = field(default_factory=dict)
    perplexity: float = float("nan")
    count: int = 0
    sum_loss: float = 0.0
    sum_weight: float = 0.0
    ece: float = float("nan")
    rms_calibration_error: float = float("nan")
    max_calibration_error: float = float("nan")
    brier: float = float("nan")
    entropy: float = float("nan")
    mrr: float = float("nan")
    macro_accuracy: float = float("nan")
    loss_stderr: float = float("nan")
    accuracy_stderr: float = float("nan")
    top_k_accuracy_stderr: dict = field(default_factory=dict)
    ties: str = "stable"
    n_bins: int = 15
    calibration: dict = field(default_factory=dict, repr=False)
    class_support: np.ndarray | None = field(default=None, repr=False)
    class_accuracy: np.ndarray | None = field(default=None, repr=False)
    confusion_matrix: np.ndarray | None = field(default=None, repr=False)
    per_row: dict | None = field(default=None, repr=False)
    sequence_logprob: np.ndarray | None = field(default=None, repr=False)
    sequence_tokens: np.ndarray | None = field(default=None, repr=False)
    sequence_greedy: np.ndarray | None = field(default=None, repr=False)

    def __eq__(self, other):
        if not isinstance(other, Evaluation):
            return NotImplemented
        return all(_same(getattr(self, f.name), getattr(other, f.name)) for f in fields(self))

    __hash__ = None  # holds arrays: not hashable

    @property
    def expected_calibration_error(self) -> float:
        """Alias of ``ece``."""
        return self.ece

    @property
    def brier_score(self) -> float:
        """Alias of ``brier``."""
        return self.brier

    def to_dict(self) -> dict:
        """Plain ``dict`` of every number (JSON-serialisable: arrays become lists, NaN
        stays a float, top-k keys become strings)."""
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif f.name in ("top_k_accuracy", "top_k_accuracy_stderr"):
                v = {str(k): x for k, x in v.items()}
            elif f.name == "calibration":
                v = {k: (x.tolist() if isinstance(x, np.ndarray) else x) for k, x in v.items()}
            elif f.name == "per_row" and v is not None:
                v = {k: x.tolist() for k, x in v.items()}
            d[f.name] = v
        return d

    def __str__(self) -> str:
        rows = [
            ("rows counted", f"{self.count:,}"),
            ("loss (cross-entropy)", f"{self.loss:.6f}"),
            ("perplexity", f"{self.perplexity:.6g}"),
            ("accuracy", f"{self.accuracy:.6f}"),
        ]
        rows += [(f"top-{k} accuracy", f"{v:.6f}") for k, v in self.top_k_accuracy.items()]
        rows += [
            ("loss standard error", f"{self.loss_stderr:.6f}"),
            ("accuracy standard error", f"{self.accuracy_stderr:.6f}"),
            ("mean reciprocal rank", f"{self.mrr:.6f}"),
            ("macro accuracy", f"{self.macro_accuracy:.6f}"),
            (f"ECE ({self.n_bins} bins)", f"{self.ece:.6f}"),
            ("RMS calibration error", f"{self.rms_calibration_error:.6f}"),
            ("max calibration error", f"{self.max_calibration_error:.6f}"),
            ("Brier score", f"{self.brier:.6f}"),
            ("mean entropy", f"{self.entropy:.6f}"),
            ("ties", self.ties),
        ]
        if self.sequence_logprob is not None:
            rows.append(("sequences", f"{len(self.sequence_logprob):,}"))
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


class _Totals:
    """Float64 sums of the per-row outputs, added block by block in row order
    (``_engine.evaluation_sums``); all additive, so that Dask adds the blocks' vectors
    (:meth:`as_vector`) and forms the metrics once."""

    def __init__(self, ks, n_bins, c, confusion):
        self.ks, self.n_bins, self.c, self.confusion = ks, n_bins, c, confusion
        self.parts = {
            "scalars": np.zeros(N_EVAL_SUMS),
            "hits": np.zeros(len(ks)),
            "w2_hits": np.zeros(len(ks)),
            "bins": np.zeros((3, n_bins)),
            "classes": np.zeros((2, c)),
            "confusion": np.zeros(c * c if confusion else 0),
        }

    def add(self, loss, rank, stats, argmax, weight, true):
        """Add one block: per-row ``loss``, ``rank`` (-1: not counted), ``stats``,
        ``argmax`` (or None), ``weight`` (or None), true class per row."""
        evaluation_sums(loss, rank, stats, argmax, weight, true, self.ks, self.parts)

    def as_vector(self):
        return np.concatenate([v.reshape(-1) for v in self.parts.values()])

    @classmethod
    def from_vector(cls, ks, n_bins, c, confusion, v):
        t = cls(ks, n_bins, c, confusion)
        at = 0
        for part in t.parts.values():
            part.reshape(-1)[:] = v[at : at + part.size]
            at += part.size
        return t

    @staticmethod
    def vector_size(ks, n_bins, c, confusion):
        return N_EVAL_SUMS + 2 * len(ks) + 3 * n_bins + 2 * c + (c * c if confusion else 0)

    def result(self, ties, extra) -> Evaluation:
        sc = self.parts["scalars"]
        p = {name: float(sc[slot]) for name, slot in EVAL_SUMS.items()}
        hits, w2_hits = self.parts["hits"], self.parts["w2_hits"]
        bw, bconf, bhits = self.parts["bins"]
        class_w, class_hits = self.parts["classes"]
        sw = p["sum_weight"]
        n = int(p["sum_count"])
        with np.errstate(invalid="ignore", divide="ignore"):

            def mean(x):
                return float(np.float64(x) / sw) if sw else float("nan")

            def stderr(m, s_w2x, s_w2x2):
                # sqrt(n / (n - 1) sum w^2 (x - m)^2) / sum w: s / sqrt(n) without weights
                if n < 2 or not sw:
                    return float("nan")
                v = s_w2x2 - 2.0 * m * s_w2x + m * m * p["sum_w2"]
                return float(np.sqrt(max(v, 0.0) * n / (n - 1)) / sw)

            loss, acc = mean(p["sum_loss"]), mean(p["sum_hits1"])
            topk = {k: mean(hits[j]) for j, k in enumerate(self.ks)}
            topk_se = {k: stderr(topk[k], w2_hits[j], w2_hits[j]) for j, k in enumerate(self.ks)}
            filled = bw > 0
            safe_bw = np.where(filled, bw, 1.0)
            gap = np.abs(bhits - bconf) / safe_bw
            share = bw / sw if sw else np.full_like(bw, np.nan)
            ece = float(np.sum(share * gap))
            rms = float(np.sqrt(np.sum(share * gap * gap)))
            mce = float(np.max(gap[filled])) if filled.any() else float("nan")
            if p["sum_nan_conf"]:  # a NaN row falls in no bin: no calibration number holds
                ece = rms = mce = float("nan")
            supported = class_w > 0
            class_acc = class_hits / np.where(supported, class_w, np.nan)
            macro = float(np.mean(class_acc[supported])) if supported.any() else float("nan")
            brier = mean(p["sum_brier"]) * (0.5 if self.c < 3 else 1.0)
            calibration = {
                "edges": np.linspace(0.0, 1.0, self.n_bins + 1),
                "weight": bw.copy(),
                "confidence": np.where(filled, bconf / safe_bw, np.nan),
                "accuracy": np.where(filled, bhits / safe_bw, np.nan),
            }
        return Evaluation(
            loss=loss,
            accuracy=acc,
            top_k_accuracy=topk,
            perplexity=float(np.exp(loss)) if loss == loss else float("nan"),
            count=n,
            sum_loss=p["sum_loss"],
            sum_weight=sw,
            ece=ece,
            rms_calibration_error=rms,
            max_calibration_error=mce,
            brier=brier,
            entropy=mean(p["sum_entropy"]),
            mrr=mean(p["sum_rr"]),
            macro_accuracy=macro,
            loss_stderr=stderr(loss, p["sum_w2_loss"], p["sum_w2_loss2"]),
            accuracy_stderr=stderr(acc, p["sum_w2_hits1"], p["sum_w2_hits1"]),
            top_k_accuracy_stderr=topk_se,
            ties=ties,
            n_bins=self.n_bins,
            calibration=calibration,
            class_support=class_w.copy(),
            class_accuracy=class_acc,
            confusion_matrix=(
                self.parts["confusion"].reshape(self.c, self.c) if self.confusion else None
            ),
            **extra,
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


def check_options(n_bins, ties, confusion, c):
    """Validated ``(n_bins, ties)``; ``confusion`` needs ``c`` within the limit."""
    check_number(n_bins, "n_bins", integral=True)
    if n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    if ties not in EVAL_TIES:
        raise ValueError(
            f"ties must be one of {', '.join(repr(t) for t in EVAL_TIES)}, got {ties!r}"
        )
    if confusion not in (True, False):
        raise TypeError(f"confusion must be True or False, got {confusion!r}")
    if confusion and c > CONFUSION_MAX_CLASSES:
        raise ValueError(
            f"confusion=True needs a C x C matrix; y_pred has {c:,} classes, more than "
            f"{CONFUSION_MAX_CLASSES:,} (pass confusion=False, or evaluate per-row outputs "
            f"with per_row=True)"
        )
    return int(n_bins), ties


def evaluate_block(
    pred,
    labels,
    kind,
    *,
    from_logits,
    ignore_class,
    weights,
    totals,
    row_offset=0,
    ties="stable",
    want_argmax=False,
):
    """Run the fused kernel on one block of rows and add its sums into ``totals``.
    Returns the kernel's per-row outputs ``(loss, rank, stats, argmax or None, true)``."""
    pred = as_predictions(pred)  # byte-swapped blocks converted here
    n, c = pred.shape
    if kind == "sparse":
        second, _ = as_labels(
            labels, (n,), c, axis=-1, ignore_class=ignore_class, row_offset=row_offset
        )
    else:
        second = as_targets(labels, pred.shape)
    rows = evaluation_rows(
        kind,
        pred,
        second,
        from_logits=from_logits,
        epsilon=EPSILON,
        ties=EVAL_TIES[ties],
        want_argmax=want_argmax or totals.confusion,
    )
    loss, rank, stats, argmax, true = rows
    totals.add(
        loss,
        rank,
        stats,
        argmax,
        None if weights is None else np.asarray(weights, np.float64),
        true,  # rows of rank -1 (ignored labels) are skipped before their class is read
    )
    return rows


class _PerRow:
    """Per-row outputs, block by block: into arrays, or into memory-mapped ``.npy`` files
    that :meth:`close` packs (uncompressed, streamed) into one ``.npz``."""

    def __init__(self, n, batch_shape, float_dtype, path):
        self.batch_shape, self.path = batch_shape, path
        dtypes = {
            "loss": float_dtype,
            "lse": float_dtype,
            "rank": np.int64,
            "argmax": np.int64,
            "entropy": float_dtype,
            "p_true": float_dtype,
        }
        self.releases = {}
        if path is None:
            self.arrays = {k: np.empty(n, dtypes[k]) for k in PER_ROW_FIELDS}
            self.tmp = None
            return
        import tempfile

        folder = os.path.dirname(os.path.abspath(path))
        self.tmp = tempfile.mkdtemp(prefix=".xent-per-row-", dir=folder)
        self.arrays = {
            k: np.lib.format.open_memmap(
                os.path.join(self.tmp, k + ".npy"), mode="w+", dtype=dtypes[k], shape=(n,)
            )
            for k in PER_ROW_FIELDS
        }
        # written pages of a shared file mapping stay in the page cache, dirty, when this
        # process drops them: its resident set stays bounded by the block
        self.releases = {k: PageRelease(v) for k, v in self.arrays.items()}

    def write(self, r0, loss, rank, stats, argmax):
        r1 = r0 + len(loss)
        a = self.arrays
        a["loss"][r0:r1] = loss
        a["lse"][r0:r1] = stats[:, STAT_LSE]
        a["rank"][r0:r1] = rank
        a["argmax"][r0:r1] = argmax
        a["entropy"][r0:r1] = stats[:, STAT_ENTROPY]
        a["p_true"][r0:r1] = stats[:, STAT_PTRUE]
        for k, release in self.releases.items():
            release.release(a[k][r0:r1])

    def close(self, ok=True):
        if self.tmp is None:
            return {k: v.reshape(self.batch_shape) for k, v in self.arrays.items()}
        import shutil
        import zipfile

        try:
            for v in self.arrays.values():
                v.flush()
            self.arrays = self.releases = None
            if ok:
                with zipfile.ZipFile(self.path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                    for k in PER_ROW_FIELDS:
                        zf.write(os.path.join(self.tmp, k + ".npy"), k + ".npy")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        if not ok:
            return None
        from xent._eval_cli import load_array

        return {
            k: load_array(self.path, k, "per-row").reshape(self.batch_shape) for k in PER_ROW_FIELDS
        }


class _Sequences:
    """Per sequence of a ``(batch, time, C)`` input: the sum of ``-w loss`` over counted
    tokens, their number, and whether each of them ranks first (stable ties: the arg-max)."""

    def __init__(self, batch, time):
        self.time = time
        self.logprob = np.zeros(batch)
        self.tokens = np.zeros(batch, np.int64)
        self.missed = np.zeros(batch, np.int64)

    def add(self, r0, loss, rank_stable, weights):
        seq = (r0 + np.arange(len(loss))) // self.time
        first = seq[0] if len(seq) else 0
        seq -= first
        size = int(seq[-1]) + 1 if len(seq) else 0
        counted = rank_stable >= 0
        if weights is not None:
            counted &= np.asarray(weights) != 0
        w = counted.astype(np.float64) if weights is None else np.where(counted, weights, 0.0)
        part = slice(first, first + size)
        self.logprob[part] -= np.bincount(seq, np.where(counted, w * loss, 0.0), size)
        self.tokens[part] += np.bincount(seq, counted, size).astype(np.int64)
        self.missed[part] += np.bincount(seq, counted & (rank_stable != 0), size).astype(np.int64)

    def result(self):
        return {
            "sequence_logprob": self.logprob,
            "sequence_tokens": self.tokens,
            "sequence_greedy": self.missed == 0,
        }


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
    n_bins=15,
    ties="stable",
    confusion=False,
    per_row=False,
):
    r"""Cross-entropy, accuracies, calibration, Brier score, entropy and more in one pass
    over ``y_pred``.

    Per row :math:`i` (class axis last) with weight :math:`w_i`, probabilities :math:`p`
    (the softmax of logits, or the renormalised probabilities), true class :math:`y` and
    :math:`r` the rank of :math:`y` among the row's scores under the tie policy ``ties``
    (``"stable"``: as ``np.argsort(-p, kind="stable")``, equal scores in index order;
    ``"optimistic"``: only strictly higher scores count, as TensorFlow's ``in_top_k``;
    ``"pessimistic"``: every other class scoring the same counts; NaN scores last):

    .. math::

        \mathrm{loss} = rac{\sum_i w_i \ell_i}{\sum_i w_i}, \quad
        \mathrm{top}_k = rac{\sum_i w_i [r_i < k]}{\sum_i w_i}, \quad
        \mathrm{mrr} = rac{\sum_i w_i / (r_i + 1)}{\sum_i w_i}, \quad
        \mathrm{brier} = rac{\sum_i w_i \sum_c (p_{ic} - t_{ic})^2}{\sum_i w_i}, \quad
        \mathrm{entropy} = rac{\sum_i w_i H(p_i)}{\sum_i w_i}

    with :math:`\ell` Keras's (sparse) categorical cross-entropy (probabilities
    renormalised and clipped at 1e-7, or logits), ``accuracy = top_1``,
    ``perplexity = exp(loss)``, :math:`t` the one-hot label (or the dense label row),
    :math:`H(p) = -\sum_c p_c \log p_c`.  The Brier score is halved for ``C <= 2``, as
    scikit-learn's ``brier_score_loss`` does for binary problems.  Calibration: rows fall in
    ``n_bins`` equal-width bins of their top-1 probability :math:`\max_c p_{ic}` (bin
    :math:`b` holds :math:`[b/n, (b+1)/n)`, the last one also 1); with :math:`W_b` the
    bin's weight share, :math:`a_b` its accuracy and :math:`q_b` its mean confidence,
    ``ece`` :math:`= \sum_b W_b |a_b - q_b|`, ``rms_calibration_error``
    :math:`= (\sum_b W_b (a_b - q_b)^2)^{1/2}`, ``max_calibration_error``
    :math:`= \max_b |a_b - q_b|` over non-empty bins (torchmetrics' definitions).
    ``class_accuracy[c]`` is the weighted accuracy of the rows of class :math:`c` (recall;
    NaN without support), ``macro_accuracy`` its mean over the classes with support
    (scikit-learn's ``balanced_accuracy_score``).  Standard errors:
    :math:`\sqrt{n/(n-1) \sum_i w_i^2 (x_i - ar x)^2} / \sum_i w_i` (:math:`s/\sqrt n`
    without weights) of the per-row loss and hit indicators.

    For dense labels the true class is the first arg-max of the label row (Keras's
    categorical accuracy).  The rank needs only a count of the classes ahead of the true
    one, and every statistic comes from the loss's own pass: no sort, no second pass over
    memory, no temporary.

    Parameters
    ----------
    y_true : array_like
        Class indices of shape ``y_pred.shape[:-1]`` (or with a trailing 1), or one-hot /
        soft label rows of ``y_pred``'s shape.  Memory maps are read block by block.
    y_pred : array_like of bfloat16/float16/32/64, shape ``(..., C)``
        Probabilities or logits (``from_logits=True``); ``np.memmap`` and
        ``np.load(..., mmap_mode="r")`` arrays of any size; 16-bit floats are computed in
        float32.  A 3-D ``(batch, time, C)`` input also gives per-sequence results.
    from_logits : bool, default False
    top_k : int or sequence of int, default (1, 5)
        The ``k`` of ``top_k_accuracy`` (``k > C`` counts every row).
    sample_weight : array_like, optional
        Per-row weights (broadcast to the batch shape); a 0/1 mask for sequences.
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
    n_bins : int, default 15
        Equal-width confidence bins of the calibration errors.
    ties : {"stable", "optimistic", "pessimistic"}, default "stable"
        How a class scoring the same as the true class ranks (accuracy, top-k, MRR,
        per-class accuracy and calibration follow it; the arg-max and the confusion matrix
        use the stable order, ``np.argmax``'s).
    confusion : bool, default False
        Also the ``(C, C)`` confusion matrix (rows: true class, columns: arg-max; weighted
        counts, scikit-learn's layout), for ``C <= 2048``.
    per_row : bool or str, default False
        ``True``: per-row arrays of the batch shape in ``per_row`` (``loss``, ``lse``,
        ``rank``, ``argmax``, ``entropy``, ``p_true``); a path ending in ``.npz``: those
        arrays written block by block to memory-mapped files and packed, uncompressed, into
        that file (bounded memory for any size), returned as memory maps of it.  Ignored
        rows hold loss 0, rank -1, arg-max -1 and NaN elsewhere; for probabilities ``lse``
        is the log of the row sum.

    Returns
    -------
    Evaluation
        Frozen dataclass: ``loss``, ``accuracy``, ``top_k_accuracy`` (dict), ``perplexity``,
        ``count``, ``sum_loss``, ``sum_weight``, ``ece``, ``rms_calibration_error``,
        ``max_calibration_error``, ``brier``, ``entropy``, ``mrr``, ``macro_accuracy``,
        ``class_accuracy`` and ``class_support`` (length C), ``loss_stderr``,
        ``accuracy_stderr``, ``top_k_accuracy_stderr`` (dict), ``calibration`` (per bin:
        ``edges``, ``weight``, ``confidence``, ``accuracy``), ``confusion_matrix`` and
        ``per_row`` when asked, and for 3-D inputs ``sequence_logprob``,
        ``sequence_tokens``, ``sequence_greedy`` (one per sequence); ``str()`` is a
        readable table, ``to_dict()`` a plain dict.

    See Also
    --------
    sparse_categorical_crossentropy : the per-row loss alone.

    Examples
    --------
    >>> import xent
    >>> ev = xent.evaluate([1, 2, 0], [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]],
    ...                    top_k=(1, 2))
    >>> round(ev.loss, 6), round(ev.accuracy, 6), round(ev.top_k_accuracy[2], 6)
    (0.960801, 0.666667, 0.666667)

    The third row ties classes 0 and 1; the smaller index ranks first, so label 0 counts as
    correct (as ``np.argmax`` and a stable sort would have it); pessimistic ties count it
    as missed.  The loss is the mean of ``-log p_y`` over the three rows:

    >>> import math
    >>> round(-(math.log(0.7) + math.log(0.2) + math.log(0.4)) / 3, 6)
    0.960801
    >>> xent.evaluate([1, 2, 0], [[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.4, 0.4, 0.2]],
    ...               ties="pessimistic").accuracy
    0.3333333333333333

    The mean reciprocal rank averages 1/1, 1/3 and 1/1; the Brier score the squared
    distances to the one-hot rows, e.g. ``0.1**2 + 0.3**2 + 0.2**2 = 0.14`` for the first:

    >>> round(ev.mrr, 6), round(ev.brier, 6)
    (0.777778, 0.56)
    """
    if _dask.is_dask(y_pred) or _dask.is_dask(y_true) or _dask.is_dask(sample_weight):
        if per_row is not False:
            raise ValueError(
                "per_row is not available for dask inputs; per-row losses of a dask array "
                "come lazily from xent.sparse_categorical_crossentropy"
            )
        return _evaluate_dask(
            y_true,
            y_pred,
            from_logits=from_logits,
            top_k=top_k,
            sample_weight=sample_weight,
            ignore_class=ignore_class,
            label_format=label_format,
            n_bins=n_bins,
            ties=ties,
            confusion=confusion,
        )
    ks = check_top_k(top_k)
    ignore_class = check_ignore_class(ignore_class)
    rows, batch_shape = prediction_rows(y_pred)
    n, c = rows.shape
    n_bins, ties = check_options(n_bins, ties, confusion, c)
    if per_row is not True and per_row is not False:
        if not isinstance(per_row, (str, os.PathLike)) or not os.fspath(per_row).endswith(".npz"):
            raise ValueError(
                f"per_row must be True, False or a path ending in .npz, got {per_row!r}"
            )
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
        per = c * rows.dtype.itemsize * (2 if kind == "dense" else 1)
        batch_size = max(1, DEFAULT_BLOCK_BYTES // per)
    elif not is_number(batch_size, integral=True) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    totals = _Totals(ks, n_bins, c, confusion)
    sequences = _Sequences(*batch_shape) if len(batch_shape) == 2 else None
    sink = None
    if per_row is not False:
        float_dtype = np.float64 if rows.dtype == np.float64 else np.float32
        sink = _PerRow(n, batch_shape, float_dtype, None if per_row is True else os.fspath(per_row))
    want_argmax = sink is not None or (sequences is not None and ties != "stable")
    releases = [PageRelease(rows), PageRelease(labels)]
    bar = Progress(
        n, c * rows.dtype.itemsize + labels.itemsize * (c if kind == "dense" else 1), bool(progress)
    )
    done = False
    try:
        for r0 in range(0, n, int(batch_size)):
            r1 = min(n, r0 + int(batch_size))
            block, lblock = rows[r0:r1], labels[r0:r1]
            w = None if weights is None else weights[r0:r1]
            loss, rank, stats, argmax, true = evaluate_block(
                block,
                lblock,
                kind,
                from_logits=from_logits,
                ignore_class=ignore_class,
                weights=w,
                totals=totals,
                row_offset=r0,
                ties=ties,
                want_argmax=want_argmax,
            )
            if sequences is not None:
                stable = rank if ties == "stable" else np.where(argmax == true, 0, 1)
                sequences.add(r0, loss, np.where(rank >= 0, stable, -1), w)
            if sink is not None:
                sink.write(r0, loss, rank, stats, argmax)
            releases[0].release(block)
            releases[1].release(lblock)
            bar.update(r1 - r0)
        done = True
    finally:
        bar.close()
        extra = {} if sink is None else {"per_row": sink.close(ok=done)}
    if sequences is not None:
        extra.update(sequences.result())
    return totals.result(ties, extra)


def _evaluate_dask(
    y_true,
    y_pred,
    *,
    from_logits,
    top_k,
    sample_weight,
    ignore_class,
    label_format,
    n_bins,
    ties,
    confusion,
):
    """:func:`evaluate` over dask inputs: each row block runs :func:`evaluate_block` on a
    worker, the blocks' partial sums (:class:`_Totals` as a vector) are added, and the
    metrics are formed once at the end, exactly as the streaming loop does in memory.
    Per-sequence results need row positions, which dask blocks do not carry: not given."""
    ks = check_top_k(top_k)
    ignore_class = check_ignore_class(ignore_class)
    pred_shape = tuple(y_pred.shape)
    if len(pred_shape) == 0:
        raise ValueError("y_pred must have a class axis (the last), got a scalar")
    c = pred_shape[-1]
    n_bins, ties = check_options(n_bins, ties, confusion, c)
    kind = label_kind(tuple(np.shape(y_true)), pred_shape, label_format)
    if sample_weight is not None and not _dask.is_dask(sample_weight):
        sample_weight = _weights_flat(sample_weight, pred_shape[:-1])

    def block(y, p, w=None):
        totals = _Totals(ks, n_bins, c, confusion)
        evaluate_block(
            p,
            y,
            kind,
            from_logits=from_logits,
            ignore_class=ignore_class,
            weights=w,
            totals=totals,
            ties=ties,
        )
        return totals.as_vector()

    size = _Totals.vector_size(ks, n_bins, c, confusion)
    sums = _dask.partial_sums(
        block, y_true, y_pred, axis=-1, kind=kind, n_parts=size, sample_weight=sample_weight
    )
    totals = _Totals.from_vector(ks, n_bins, c, confusion, np.asarray(sums.compute()))
    return totals.result(ties, {})
