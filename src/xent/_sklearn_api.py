"""scikit-learn front end: ``log_loss`` with ``sklearn.metrics.log_loss``'s semantics
(clipping at the dtype's machine epsilon, no renormalisation, label mapping), computed
by the direct-gather kernel: one element read per row after one checking pass.
"""

from __future__ import annotations

import warnings

import numpy as np

from xent import _engine
from xent._frameworks import as_float64, is_bfloat16
from xent._inputs import as_array, as_predictions, as_sample_weight

_NO_PRED = object()


def _as_probabilities(y_pred, name):
    """``(probabilities, eps)``: integers become float64 (as scikit-learn's check_array);
    eps is the machine epsilon of the float dtype given (float16 clips at its own, as
    scikit-learn does, but is computed in float32)."""
    p = as_array(y_pred, name)
    if is_bfloat16(p.dtype):
        # scikit-learn turns bfloat16 into float64 (not one of its float dtypes): its eps
        return as_predictions(p, name), float(np.finfo(np.float64).eps)
    if p.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold probabilities (numbers in [0, 1]), got dtype {p.dtype}")
    if p.ndim not in (1, 2):
        raise ValueError(
            f"{name} must have shape (n_samples,) (binary: probability of the positive "
            f"class) or (n_samples, n_classes), got {p.shape}"
        )
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    return as_predictions(p, name), float(np.finfo(p.dtype).eps)


def _classes(y, labels, name):
    """Sorted classes and the column index of every label (scikit-learn's LabelBinarizer)."""
    if labels is not None:
        declared = as_array(labels, "labels").reshape(-1)
        classes = np.unique(declared)
        if declared.size == classes.size and not np.array_equal(declared, classes):
            warnings.warn(
                f"Labels passed were {declared.tolist()}. But this function assumes labels "
                f"are ordered lexicographically. Pass the ordered labels={classes.tolist()} "
                f"and ensure that the columns of y_prob correspond to this ordering.",
                UserWarning,
                stacklevel=3,
            )
        if classes.size < 2:
            raise ValueError(
                f"The labels array needs to contain at least two labels, got {classes}."
            )
    else:
        classes = declared = np.unique(y)
        if classes.size < 2:
            raise ValueError(
                f"{name} contains only one label ({classes[0]}). Please provide the list of "
                f"all expected class labels explicitly through the labels argument."
            )
    try:
        index = np.searchsorted(classes, y)
    except TypeError as exc:
        raise TypeError(f"{name} and labels cannot be compared: {exc}") from None
    index = np.clip(index, 0, classes.size - 1)
    unknown = classes[index] != y
    if unknown.any():
        k = int(np.argmax(unknown))
        undeclared = "{" + ", ".join(repr(v) for v in sorted(set(y[unknown].tolist()))) + "}"
        raise ValueError(
            f"{name} contains values {undeclared} not belonging to the passed labels "
            f"{declared.tolist()}. (The first is {y[k].item()!r}, at index {k}.)"
        )
    return classes, index.astype(np.int64)


def _sample_weight(sample_weight, n):
    if sample_weight is None:
        return None
    w = as_array(sample_weight, "sample_weight")
    if w.shape != (n,):  # scikit-learn does not broadcast
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    w = as_sample_weight(w, (n,))
    if not w.any():
        raise ValueError("sample_weight must contain at least one non-zero number")
    return w


def log_loss(
    y_true, y_proba=None, *, normalize=True, sample_weight=None, labels=None, y_pred=_NO_PRED
):
    r"""Log loss (cross-entropy) of predicted probabilities, as ``sklearn.metrics.log_loss``.

    .. math::

        \ell_i = -\sum_c t_{ic} \log \mathrm{clip}(p_{ic}, \epsilon, 1 - \epsilon),
        \qquad
        \text{result} = \frac{\sum_i w_i \ell_i}{\sum_i w_i} \ (\text{normalize}),
        \quad \sum_i w_i \ell_i \ (\text{otherwise})

    with :math:`\epsilon` the machine epsilon of ``y_pred``'s dtype and :math:`t` the
    one-hot encoding of ``y_true`` over the sorted classes.  Rows are **not**
    renormalised: a ``UserWarning`` says so when a row's sum differs from 1 by more than
    :math:`\sqrt{\epsilon}` (relative) + 1e-8.  For label vectors the loss reads one
    element per row (a gather) after one pass that checks the values and row sums.

    Parameters
    ----------
    y_true : array_like, shape ``(n_samples,)`` or ``(n_samples, n_classes)``
        Labels of any sortable type (ints, strings, ...) or a label-indicator matrix.
    y_proba : array_like of float, shape ``(n_samples, n_classes)`` or ``(n_samples,)``
        Probabilities, columns in the sorted order of the classes; a 1-D array holds the
        probability of the positive (larger) class of a binary problem.  Any float dtype,
        bfloat16 included.  (scikit-learn 1.9 renamed ``y_pred`` to ``y_proba``; as there,
        ``y_pred=`` still works with a ``FutureWarning``.)
    normalize : bool, default True
        Weighted mean (True) or weighted sum (False).
    sample_weight : array_like of shape ``(n_samples,)``, optional
        Finite weights, not all zero.
    labels : array_like, optional
        All class labels, when ``y_true`` does not contain every class.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Values of ``y_pred`` outside ``[0, 1]`` or NaN (value and position named); a label
        not in ``labels``; fewer than two classes; a class count that does not match
        ``y_pred``'s columns; mismatched lengths; all-zero ``sample_weight``.

    See Also
    --------
    sparse_categorical_crossentropy : Keras semantics (renormalises; ``epsilon=1e-7``).

    Examples
    --------
    >>> import xent
    >>> xent.log_loss([1, 2], [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]], labels=[0, 1, 2])
    1.176939193690798
    >>> round(xent.log_loss(["spam", "ham", "ham"], [0.9, 0.2, 0.3]), 7)
    0.228393

    ("spam" sorts after "ham", so 0.9 is the probability of row 0's own label):

    >>> import math
    >>> round(-(math.log(0.9) + math.log(1 - 0.2) + math.log(1 - 0.3)) / 3, 7)
    0.228393
    """
    pname = "y_proba"
    if y_pred is not _NO_PRED:
        if y_proba is not None:
            raise ValueError(
                "Cannot use both `y_pred` and `y_proba`. `y_pred` is deprecated, use `y_proba` "
                "instead."
            )
        warnings.warn(
            "`y_pred` was renamed to `y_proba` in version 1.9 and will be removed in 1.11. "
            "Use `y_proba` instead.",
            FutureWarning,
            stacklevel=2,
        )
        y_proba, pname = y_pred, "y_pred"
    if y_proba is None:
        raise TypeError("log_loss() needs the predicted probabilities (y_proba)")
    p, eps = _as_probabilities(y_proba, pname)
    y = as_array(y_true, "y_true")
    n = p.shape[0]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if p.ndim == 2 and p.shape[1] == 1:  # one column: the positive class, as 1-D
        p = p[:, 0]
    # scikit-learn's check_consistent_length(y_proba, y_true, sample_weight) and its wording
    lengths = [n, y.shape[0] if y.ndim else 1]
    if sample_weight is not None and np.ndim(sample_weight) > 0:
        lengths.append(len(as_array(sample_weight, "sample_weight")))
    if len(set(lengths)) > 1:
        named = f"{pname} has {n} rows, y_true {lengths[1]}" + (
            f", sample_weight {lengths[2]}" if len(lengths) > 2 else ""
        )
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: {lengths} ({named})"
        )
    if y.ndim not in (1, 2):
        raise ValueError(
            f"y_true has shape {y.shape}; it must be (n_samples,) labels or an "
            f"(n_samples, n_classes) indicator matrix"
        )
    w = _sample_weight(sample_weight, n)
    if n == 0:
        raise ValueError(f"{pname} is empty (0 samples)")
    rows = p[:, None] if p.ndim == 1 else p
    sums, bad = _engine.probability_checks(rows)
    if bad.any():
        i = int(np.argmax(bad > 0))
        row = rows[i]
        wide = as_float64(row)  # one row
        j = int(np.argmax(~((wide >= 0) & (wide <= 1))))
        raise ValueError(
            f"{pname} must hold probabilities in [0, 1]; found {float(wide[j])!r} at "
            + (f"index {i}" if p.ndim == 1 else f"index ({i}, {j})")
        )
    if p.ndim == 1:
        p1 = as_float64(p) if p.dtype.itemsize == 2 else p
        rows = np.stack([1.0 - p1, p1], axis=1)  # O(n): the binary columns
        sums = np.ones(n)
    if y.ndim == 2:
        if y.dtype.kind not in "biuf":
            raise TypeError(f"an indicator y_true must be numeric, got dtype {y.dtype}")
        n_classes = y.shape[1]
        if labels is not None and np.unique(as_array(labels, "labels")).size != n_classes:
            raise ValueError("labels must list one label per column of the indicator y_true")
        targets = y
    else:
        classes, index = _classes(y, labels, "y_true")
        n_classes = classes.size
    if n_classes != rows.shape[1]:
        raise ValueError(
            f"y_true has {n_classes} classes but {pname} has {rows.shape[1]} columns"
            + ("; pass every class label through the labels argument" if labels is None else "")
        )
    off = ~(np.abs(sums - 1.0) <= 1e-8 + np.sqrt(eps))  # scikit-learn's isclose rule
    if off.any():
        k = int(np.argmax(off))
        warnings.warn(
            f"The y_prob values do not sum to one. Make sure to pass probabilities. ({pname} "
            f"row {k} sums to {float(sums[k])!r}; rows are not renormalised.)",
            UserWarning,
            stacklevel=2,
        )
    options = _engine.RowOptions(from_logits=False, epsilon=eps, renormalize=False)
    if y.ndim == 2:
        tmode = targets.view(np.uint8) if targets.dtype.kind == "b" else targets
        loss, _ = _engine.dense_rows(rows, tmode, options)
    else:
        loss, _ = _engine.sparse_rows(rows, index, options)
    loss = loss.astype(np.float64)
    total = float(np.sum(loss if w is None else w * loss))
    if not normalize:
        return total
    return total / (float(n) if w is None else float(np.sum(w)))
