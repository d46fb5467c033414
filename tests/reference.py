"""Slow, plain NumPy reference written literally from the docstring formulas, in float64.

Nothing here is shared with the package: it builds the one-hot / smoothed target arrays,
the softmax and the clipped probabilities explicitly, exactly as the formulas read.
"""

import numpy as np


def _move(a, axis):
    return np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)


def log_softmax(z):
    """log softmax along the last axis; a row of only -inf gives NaN."""
    z = np.asarray(z, dtype=np.float64)
    m = np.max(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = z - m
        return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def log_clipped_probs(p, epsilon=1e-7, renormalize=True, dtype=np.float64):
    """``log(clip(p / sum(p), eps, 1 - eps))``; the clip bounds in the input precision."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if renormalize:
            p = p / np.sum(p, axis=-1, keepdims=True)
        t = np.dtype(dtype).type
        lo, hi = float(t(epsilon)), float(t(1.0) - t(epsilon))
        return np.log(np.clip(p, lo, hi))


def smoothed(t, label_smoothing):
    """``t (1 - ls) + ls / C`` with C the size of the (last) class axis."""
    t = np.asarray(t, dtype=np.float64)
    c = t.shape[-1]
    return t * (1.0 - label_smoothing) + label_smoothing / c


def weighted_neg_sum(t, logq):
    """``-sum_c t_c log q_c`` where terms with ``t_c == 0`` are 0 (never ``0 * -inf``)."""
    with np.errstate(invalid="ignore"):
        prod = np.where(t != 0, t * logq, 0.0)
    return -np.sum(prod, axis=-1)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1,
                             epsilon=1e-7, renormalize=True, dtype=np.float64):
    """Reference dense loss, per sample."""
    t = smoothed(_move(y_true, axis), label_smoothing)
    z = _move(y_pred, axis)
    logq = log_softmax(z) if from_logits else log_clipped_probs(z, epsilon, renormalize, dtype)
    loss = weighted_neg_sum(t, logq)
    if from_logits:
        # documented rule: a row with NaN, a +inf logit or only -inf logits has no softmax,
        # so its loss is NaN even where every target weight is 0
        no_softmax = np.isnan(z).any(-1) | (z == np.inf).any(-1) | (z == -np.inf).all(-1)
        loss = np.where(no_softmax, np.nan, loss)
    return loss


def one_hot(labels, c):
    labels = np.asarray(labels)
    out = np.zeros(labels.shape + (c,))
    valid = (labels >= 0) & (labels < c)
    idx = np.nonzero(valid)
    out[idx + (labels[idx].astype(np.int64),)] = 1.0
    return out


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None,
                                    axis=-1, label_smoothing=0.0, epsilon=1e-7,
                                    renormalize=True, dtype=np.float64):
    """Reference sparse loss, per sample: one-hot the labels, then the dense formula."""
    z = _move(y_pred, axis)
    y = np.asarray(y_true)
    if y.ndim == z.ndim and y.shape[-1] == 1:
        y = y[..., 0]
    valid = np.ones(y.shape, bool) if ignore_class is None else (y != ignore_class)
    t = one_hot(np.where(valid, y, 0), z.shape[-1])
    loss = categorical_crossentropy(t, z, from_logits, label_smoothing, -1, epsilon,
                                    renormalize, dtype)
    return np.where(valid, loss, 0.0), valid


def keras_reduce(losses, sample_weight=None, valid=None, reduction="sum_over_batch_size"):
    """Keras 3 reductions written out (with an exact count instead of Keras's +1e-7)."""
    losses = np.asarray(losses, dtype=np.float64)
    if sample_weight is None:
        w = np.ones(losses.shape)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim == losses.ndim + 1 and w.shape[-1] == 1:
            w = w[..., 0]
        w = np.broadcast_to(w.reshape(w.shape + (1,) * (losses.ndim - w.ndim)), losses.shape)
    mask = np.ones(losses.shape, bool) if valid is None else np.asarray(valid, bool)
    weighted = losses * w * mask
    if reduction in (None, "none"):
        return weighted
    total = weighted.sum()
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and sample_weight is not None:
        div = (w * mask).sum()
    else:
        div = mask.sum()
    return total / div if div else 0.0
