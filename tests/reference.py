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


def categorical_crossentropy(
    y_true,
    y_pred,
    from_logits=False,
    label_smoothing=0.0,
    axis=-1,
    epsilon=1e-7,
    renormalize=True,
    dtype=np.float64,
):
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
    flat = labels.reshape(-1)
    out = np.zeros((flat.size, c))
    valid = np.nonzero((flat >= 0) & (flat < c))[0]
    out[valid, flat[valid].astype(np.int64)] = 1.0
    return out.reshape(labels.shape + (c,))


def sparse_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits=False,
    ignore_class=None,
    axis=-1,
    label_smoothing=0.0,
    epsilon=1e-7,
    renormalize=True,
    dtype=np.float64,
):
    """Reference sparse loss, per sample: one-hot the labels, then the dense formula."""
    z = _move(y_pred, axis)
    y = np.asarray(y_true)
    if y.ndim == z.ndim and y.shape[-1] == 1:
        y = y[..., 0]
    valid = np.ones(y.shape, bool) if ignore_class is None else (y != ignore_class)
    t = one_hot(np.where(valid, y, 0), z.shape[-1])
    loss = categorical_crossentropy(
        t, z, from_logits, label_smoothing, -1, epsilon, renormalize, dtype
    )
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


# ------------------------------------------------------------ PyTorch
def torch_cross_entropy(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
):
    """``torch.nn.functional.cross_entropy`` written out: classes on dim 1 (0 unbatched),
    index or probability targets, class weights, the two "mean" denominators; plus the
    z-loss ``s lse^2`` (its mean over counted elements) and soft-capping."""
    z = np.asarray(input, dtype=np.float64)
    dim = 0 if z.ndim == 1 else 1
    z = np.moveaxis(z, dim, -1)
    if softcap is not None:
        z = softcap * np.tanh(z / softcap)
    c = z.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    logp = log_softmax(z)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(z, axis=-1, keepdims=True)
        lse = (m + np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True)))[..., 0]
    t = np.asarray(target)
    eps = label_smoothing
    if t.dtype.kind == "f":  # probabilities
        tt = np.moveaxis(t.astype(np.float64), dim, -1)
        tt = (1 - eps) * tt + eps / c
        loss = weighted_neg_sum(w * tt, logp)
        counted = np.ones(loss.shape, bool)
        divisor = loss.size
    else:
        counted = t != ignore_index
        safe = np.where(counted, t, 0)
        oh = one_hot(safe, c)
        main = weighted_neg_sum(w * oh, logp)
        smooth = weighted_neg_sum(w * np.ones(c), logp) / c
        loss = (1 - eps) * main + (eps * smooth if eps else 0.0)  # no 0 * inf without smoothing
        loss = np.where(counted, loss, 0.0)
        divisor = np.sum(np.where(counted, w[safe], 0.0))
    zl = np.where(counted, z_loss * lse**2, 0.0) if z_loss else np.zeros(loss.shape)
    if reduction == "none":
        return loss + zl
    if reduction == "sum":
        return loss.sum() + zl.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss.sum() / divisor + zl.sum() / counted.sum()


def torch_cross_entropy_grad(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    grad_output=1.0,
):
    """``d/d input`` of ``grad_output * torch_cross_entropy(...)`` (summed over elements for
    ``"none"``), from the formulas: an element's loss is ``sum_c q_c (lse - u_c)`` with ``q`` its
    effective target, so ``d/du_j = (sum_c q_c) p_j - q_j``; the z-loss ``s lse**2`` adds
    ``2 s lse p_j``; soft-capping ``u = cap tanh(z / cap)`` multiplies by ``1 - (u / cap)**2``."""
    z = np.asarray(input, dtype=np.float64)
    dim = 0 if z.ndim == 1 else 1
    z = np.moveaxis(z, dim, -1)
    u = softcap * np.tanh(z / softcap) if softcap is not None else z
    c = u.shape[-1]
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(u, axis=-1, keepdims=True)
        e = np.exp(u - m)
        p = e / e.sum(axis=-1, keepdims=True)
        lse = (m + np.log(np.sum(e, axis=-1, keepdims=True)))[..., 0]
    t = np.asarray(target)
    eps = label_smoothing
    if t.dtype.kind == "f":
        tt = np.moveaxis(t.astype(np.float64), dim, -1)
        q = w * ((1 - eps) * tt + eps / c)
        counted = np.ones(u.shape[:-1], bool)
        divisor = counted.size
    else:
        counted = t != ignore_index
        safe = np.where(counted, t, 0)
        q = (1 - eps) * w[safe][..., None] * one_hot(safe, c) + eps * w / c
        q = np.where(counted[..., None], q, 0.0)
        divisor = np.sum(np.where(counted, w[safe], 0.0))
    go = np.broadcast_to(np.asarray(grad_output, np.float64), u.shape[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "mean":
            coef, zcoef = go / divisor, go / counted.sum()
        else:
            coef, zcoef = go, go
        coef = np.where(counted, coef, 0.0)[..., None]
        zcoef = np.where(counted, zcoef, 0.0)[..., None]
        g = coef * (q.sum(axis=-1, keepdims=True) * p - q)
        if z_loss:
            g = g + zcoef * 2 * z_loss * lse[..., None] * p
    g = np.where(counted[..., None], g, 0.0)  # an ignored element's row is exactly 0
    if softcap is not None:
        g = g * (1 - (u / softcap) ** 2)
    return np.moveaxis(g, -1, dim)


def torch_nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """``-w_y x_y`` per element; "mean" divides by the sum of the counted weights."""
    x = np.moveaxis(np.asarray(input, dtype=np.float64), 0 if np.ndim(input) == 1 else 1, -1)
    t = np.asarray(target)
    w = np.ones(x.shape[-1]) if weight is None else np.asarray(weight, dtype=np.float64)
    counted = t != ignore_index
    safe = np.where(counted, t, 0)
    picked = np.take_along_axis(x, safe[..., None], -1)[..., 0]
    loss = np.where(counted, -w[safe] * picked, 0.0)
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return loss.sum() / np.sum(np.where(counted, w[safe], 0.0))


# ------------------------------------------------------------ scikit-learn
def sklearn_log_loss(y_true, y_pred, normalize=True, sample_weight=None, labels=None):
    """``sklearn.metrics.log_loss``: one-hot over the sorted classes, clip at the dtype's
    epsilon, no renormalisation, weighted mean or sum."""
    p = np.asarray(y_pred)
    eps = np.finfo(p.dtype if p.dtype.kind == "f" else np.float64).eps
    p = p.astype(np.float64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], axis=1)
    y = np.asarray(y_true)
    if y.ndim == 2:
        t = y.astype(np.float64)
    else:
        classes = np.unique(y if labels is None else labels)
        t = (y[:, None] == classes[None, :]).astype(np.float64)
    lo, hi = eps, 1 - eps
    loss = weighted_neg_sum(t, np.log(np.clip(p, lo, hi)))
    w = np.ones(len(loss)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    total = np.sum(w * loss)
    return total / np.sum(w) if normalize else total


# ------------------------------------------------------------ optax
def optax_softmax_cross_entropy(logits, labels, where=None, axis=-1):
    """``-sum_{c in W} y_c log softmax_W(z)_c``; examples with nothing kept give 0."""
    z = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    y = np.moveaxis(np.broadcast_to(np.asarray(labels, np.float64), np.shape(logits)), axis, -1)
    if where is None:
        keep = np.ones(z.shape, bool)
    elif np.ndim(where) == z.ndim - 1:
        keep = np.broadcast_to(np.asarray(where)[..., None], z.shape)
    else:
        keep = np.moveaxis(np.broadcast_to(where, np.shape(logits)), axis, -1)
    zm = np.where(keep, z, -np.inf)
    loss = weighted_neg_sum(np.where(keep, y, 0.0), log_softmax(zm))
    return np.where(keep.any(-1), loss, 0.0)


def optax_integer_labels(logits, labels, where=None, axis=-1):
    """``lse_W(z) - z_y`` through the one-hot of the labels."""
    c = np.shape(logits)[axis]
    oh = np.moveaxis(one_hot(np.asarray(labels), c), -1, axis)
    return optax_softmax_cross_entropy(logits, oh, where, axis)


# ------------------------------------------------------------ evaluation metrics
def evaluate(
    y_true,
    y_pred,
    from_logits=False,
    top_k=(1, 5),
    sample_weight=None,
    ignore_class=None,
    dense=False,
    dtype=np.float64,
):
    """Loss, accuracy and top-k by the textbook recipe: Keras's loss per row, the rank of
    the true class from a full stable sort of ``-p`` (NaN last), weighted means."""
    p = np.asarray(y_pred, dtype=np.float64)
    c = p.shape[-1]
    p = p.reshape(-1, c)
    y = np.asarray(y_true)
    if dense:
        t = y.reshape(-1, c).astype(np.float64)
        labels = np.argmax(t, axis=1)
        loss = categorical_crossentropy(t, p, from_logits, dtype=dtype)
        counted = np.ones(len(labels), bool)
    else:
        labels = y.reshape(-1)
        counted = np.ones(len(labels), bool) if ignore_class is None else labels != ignore_class
        safe = np.where(counted, labels, 0)
        loss = categorical_crossentropy(one_hot(safe, c), p, from_logits, dtype=dtype)
        labels = safe
    order = np.argsort(-p, axis=1, kind="stable")  # NumPy sorts NaN last
    rank = np.argmax(order == labels[:, None], axis=1)
    w = (
        np.ones(len(labels))
        if sample_weight is None
        else np.asarray(sample_weight, np.float64).reshape(-1)
    )
    w = np.where(counted, w, 0.0)
    sw = w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return _metrics(loss, rank, w, sw, counted, top_k)


def _metrics(loss, rank, w, sw, counted, top_k):
    out = {
        "loss": np.sum(w * np.where(counted, loss, 0.0)) / sw,
        "accuracy": np.sum(w * (rank == 0)) / sw,
        "top_k_accuracy": {k: np.sum(w * (rank < k)) / sw for k in top_k},
        "count": int(counted.sum()),
        "sum_weight": sw,
    }
    out["perplexity"] = np.exp(out["loss"])
    return out


def evaluation_metrics(
    y_true,
    y_pred,
    from_logits=False,
    top_k=(1, 5),
    sample_weight=None,
    ignore_class=None,
    dense=False,
    n_bins=15,
    ties="stable",
    dtype=np.float64,
):
    """Every number of ``xent.evaluate`` by the textbook recipe, in float64: softmax (or
    renormalised) probabilities, ranks from the scores under the tie policy (stable: a full
    stable sort, NaN last), bins by ``floor(n_bins * max p)``, weighted means."""
    out = evaluate(y_true, y_pred, from_logits, top_k, sample_weight, ignore_class, dense, dtype)
    s = np.asarray(y_pred, dtype=np.float64)
    c = s.shape[-1]
    s = s.reshape(-1, c)
    n = len(s)
    if from_logits:
        lse = np.log(np.sum(np.exp(s - s.max(1, keepdims=True)), 1)) + s.max(1)
        p = np.exp(s - lse[:, None])
    else:
        total = s.sum(1)
        lse = np.log(total)
        p = s / total[:, None]
    y = np.asarray(y_true)
    if dense:
        t = y.reshape(-1, c).astype(np.float64)
        labels = np.argmax(t, axis=1)
        counted = np.ones(n, bool)
    else:
        labels = y.reshape(-1).astype(np.int64)
        counted = np.ones(n, bool) if ignore_class is None else labels != ignore_class
        labels = np.where(counted, labels, 0)
        t = one_hot(labels, c)
    v = s[np.arange(n), labels][:, None]
    if ties == "stable":
        order = np.argsort(-s, axis=1, kind="stable")
        rank = np.argmax(order == labels[:, None], axis=1)
    elif ties == "optimistic":
        rank = np.sum(s > v, axis=1)
    else:
        rank = np.sum(s >= v, axis=1) - 1
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64).reshape(-1)
    w = np.where(counted, w, 0.0)
    sw = w.sum()
    hit = (rank == 0) & counted
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    entropy = -plogp.sum(1)
    brier = np.sum((p - t) ** 2, 1) * (0.5 if c < 3 else 1.0)
    conf = p.max(1)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    bw = np.bincount(b, w, n_bins)
    bconf = np.bincount(b, w * conf, n_bins)
    bhit = np.bincount(b, w * hit, n_bins)
    filled = bw > 0
    gap = np.abs(bhit - bconf) / np.where(filled, bw, 1.0)
    class_w = np.bincount(labels, w, c)
    class_hit = np.bincount(labels, w * hit, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = class_hit / class_w
    m = np.count_nonzero(counted)

    def stderr(x):
        mean = np.sum(w * x) / sw
        return np.sqrt(m / (m - 1) * np.sum(w**2 * (x - mean) ** 2)) / sw

    per_loss = np.where(counted, categorical_crossentropy(t, s, from_logits, dtype=dtype), 0.0)
    out.update(
        accuracy=np.sum(w * hit) / sw,
        top_k_accuracy={k: np.sum(w * ((rank < k) & counted)) / sw for k in top_k},
        ece=np.sum(bw / sw * gap),
        rms_calibration_error=np.sqrt(np.sum(bw / sw * gap**2)),
        max_calibration_error=np.max(gap[filled]),
        brier=np.sum(w * brier) / sw,
        entropy=np.sum(w * entropy) / sw,
        mrr=np.sum(w / (rank + 1.0)) / sw,
        class_accuracy=class_acc,
        class_support=class_w,
        macro_accuracy=np.mean(class_acc[class_w > 0]),
        loss_stderr=stderr(per_loss),
        accuracy_stderr=stderr(hit.astype(np.float64)),
        top_k_accuracy_stderr={k: stderr(((rank < k) & counted).astype(np.float64)) for k in top_k},
        confusion_matrix=np.bincount(labels * c + np.argmax(s, axis=1), w, c * c).reshape(c, c),
        per_row={
            "loss": per_loss,
            "lse": lse,
            "rank": np.where(counted, rank, -1),
            "argmax": np.where(counted, np.argmax(s, axis=1), -1),
            "entropy": entropy,
            "p_true": p[np.arange(n), labels],
        },
        counted=counted,
    )
    return out


def sequence_metrics(y_true, y_pred, from_logits, mask=None, ignore_class=None):
    """Per sequence of a ``(batch, time, C)`` input: ``sum log p(y)`` over counted tokens (the
    mask's weights times Keras's per-token loss), their number, and whether every one of
    them is the arg-max (lm-evaluation-harness's ``loglikelihood`` and ``is_greedy``)."""
    s = np.asarray(y_pred, np.float64)
    bsz, time, c = s.shape
    y = np.asarray(y_true).reshape(bsz, time)
    counted = np.ones((bsz, time), bool) if ignore_class is None else y != ignore_class
    w = np.ones((bsz, time)) if mask is None else np.asarray(mask, np.float64)
    counted &= w != 0
    safe = np.where(counted, y, 0)
    loss = categorical_crossentropy(one_hot(safe, c), s, from_logits).reshape(bsz, time)
    logprob = -np.sum(np.where(counted, w * loss, 0.0), axis=1)
    greedy = np.all(~counted | (np.argmax(s, axis=-1) == y), axis=1)
    return logprob, counted.sum(1), greedy
