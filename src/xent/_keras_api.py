"""Keras 3 front end, functions: ``categorical_crossentropy`` and
``sparse_categorical_crossentropy`` (the loss classes are in ``_keras_losses``).

Each function is Keras's formula over the per-row statistics the kernels compute; the
input policy lives in ``_inputs``, the reductions in ``_reduce``.
"""

from __future__ import annotations

from xent import _dask, _engine
from xent._engine import EPSILON
from xent._frameworks import returns_like_inputs
from xent._inputs import (
    as_labels,
    as_predictions,
    as_targets,
    check_counted_labels,
    check_epsilon,
    check_fraction,
    normalize_axis,
    to_rows,
)
from xent._vocab import LargeVocab, check_large_vocab, finish


def _prepare(y_pred, axis, label_smoothing, epsilon):
    """Validated options and the predictions as 2-D rows: ``(rows, batch_shape, ax, ls, eps)``."""
    smoothing = check_fraction(label_smoothing, "label_smoothing")
    eps = check_epsilon(epsilon)
    pred = as_predictions(y_pred)
    ax = normalize_axis(axis, pred.ndim)
    rows, batch_shape = to_rows(pred, ax)
    return pred, rows, batch_shape, ax, smoothing, eps


_PLAIN = LargeVocab()


def _row_options(from_logits, smoothing, epsilon, renormalize, opts):
    return opts.row_options(
        from_logits=from_logits, smoothing=smoothing, epsilon=epsilon, renormalize=renormalize
    )


def _dask_function(func, y_true, y_pred, opts, *, dense, axis, **kw):
    """A Keras-style function on dask inputs: ``func`` itself on every row block (lazy, the
    per-sample shape)."""
    if opts.extra_outputs:
        raise ValueError("return_lse / return_z_loss are not available for dask inputs")
    dtype = _dask.result_dtype(y_pred)
    return _dask.per_sample(
        lambda y, p: func(y, p, axis=-1, **kw),
        y_true,
        y_pred,
        axis=axis,
        kind="dense" if dense else "sparse",
        dtype=dtype,
    )


def _with_vocab(loss, lse, valid, opts, batch_shape):
    """Add the z-loss and package the outputs the large-vocabulary options ask for."""
    return finish(loss, lse, None if valid is None else valid.reshape(-1), opts, batch_shape)


def _sparse(
    y_true,
    y_pred,
    from_logits,
    ignore_class,
    axis,
    label_smoothing,
    epsilon,
    renormalize,
    opts=_PLAIN,
):
    """Per-sample sparse losses, the mask of counted entries (``None``: all count) and the
    losses' float64 sum if the kernel took it (else ``None``); with large-vocabulary
    options, the packaged outputs instead of the losses (and no sum)."""
    _, rows, batch_shape, _, smoothing, eps = _prepare(y_pred, axis, label_smoothing, epsilon)

    def read_labels(range_check):
        return as_labels(
            y_true,
            batch_shape,
            rows.shape[1],
            axis=axis,
            ignore_class=ignore_class,
            native=True,
            range_check=range_check,
        )

    # the range check comes from the kernel pass, which reads the labels anyway
    labels, valid = read_labels(False)
    got = _engine.sparse_losses(
        rows, labels, _row_options(from_logits, smoothing, eps, renormalize, opts)
    )
    check_counted_labels(got.outside, valid, lambda: read_labels(True))
    loss, lse, total = got.loss, got.lse, got.total
    if opts is _PLAIN:
        return loss.reshape(batch_shape), valid, total
    return _with_vocab(loss, lse, valid, opts, batch_shape), valid, None


def _dense(y_true, y_pred, from_logits, label_smoothing, axis, epsilon, renormalize, opts=_PLAIN):
    """Per-sample dense losses and their float64 sum (as :func:`_sparse`, without a mask)."""
    pred, rows, batch_shape, ax, smoothing, eps = _prepare(y_pred, axis, label_smoothing, epsilon)
    trows, _ = to_rows(as_targets(y_true, pred.shape), ax, name="y_true")
    got = _engine.dense_losses(
        rows, trows, _row_options(from_logits, smoothing, eps, renormalize, opts)
    )
    loss, lse, total = got.loss, got.lse, got.total
    if opts is _PLAIN:
        return loss.reshape(batch_shape), total
    return _with_vocab(loss, lse, None, opts, batch_shape), None


@returns_like_inputs
def sparse_categorical_crossentropy(
    y_true,
    y_pred,
    from_logits=False,
    ignore_class=None,
    axis=-1,
    label_smoothing=0.0,
    *,
    epsilon=EPSILON,
    renormalize=True,
    z_loss=0.0,
    softcap=None,
    return_lse=False,
    return_z_loss=False,
):
    r"""Per-sample cross-entropy between integer labels and predictions (Keras 3 semantics).

    The label's score is read by a direct index gather; no one-hot array is built, not
    even for label smoothing.

    .. math::

        \ell = -\sum_c y'_c \log q_c, \qquad
        y' = (1 - \varepsilon)\,\mathrm{onehot}(y) + \varepsilon / C

    with :math:`q = \mathrm{softmax}(z)` for logits, or for probabilities
    :math:`q = \mathrm{clip}(p / \sum_c p_c, \epsilon, 1 - \epsilon)` (the division is
    skipped when ``renormalize=False``).  For logits this is
    :math:`(1-\varepsilon)(\mathrm{lse}(z) - z_y) + \varepsilon(\mathrm{lse}(z) - \bar z)`.

    Parameters
    ----------
    y_true : array_like of int, shape ``y_pred.shape`` without ``axis``
        Class indices in ``[0, C)``; any integer dtype, or floats holding whole numbers.
        A trailing axis of size 1 is accepted and squeezed.
    y_pred : array_like of float, shape ``(..., C, ...)``
        Probabilities (``from_logits=False``) or logits; float16 is computed in float32.
    from_logits : bool, default False
        Whether ``y_pred`` holds logits.
    ignore_class : int or None, default None
        Label value whose entries give loss 0 (and are not counted by mean reductions).
    axis : int, default -1
        The class axis of ``y_pred`` (any axis is supported).
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon` above; ``C`` is the size of ``axis``.
    epsilon : float in [0, 0.5), default 1e-7
        Clipping bound for probabilities (Keras's ``backend.epsilon()``).
    renormalize : bool, default True
        Divide probability rows by their sum first (Keras).  ``False`` trusts that rows
        sum to one: without smoothing only ``p[y]`` is read, one element per row.

    Returns
    -------
    ndarray, shape ``y_pred.shape`` without ``axis``
        float64 for float64 predictions, float32 otherwise.

    Raises
    ------
    TypeError
        Non-float predictions; bool, complex or object labels.
    ValueError
        Labels out of range, NaN or non-integral (the message names the first one and its
        position); shape mismatch; ``label_smoothing`` outside ``[0, 1]``.

    See Also
    --------
    categorical_crossentropy : the same loss against one-hot or soft target rows.
    SparseCategoricalCrossentropy : the loss object with reductions and sample weights.

    Examples
    --------
    >>> import xent
    >>> y_pred = [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]
    >>> xent.sparse_categorical_crossentropy([1, 2], y_pred)
    array([0.05129329, 2.30258509])
    >>> xent.sparse_categorical_crossentropy([1, 2], y_pred, label_smoothing=0.1)
    array([0.68500134, 2.23327037])
    """
    opts = check_large_vocab(
        z_loss, softcap, return_lse, return_z_loss, from_logits=bool(from_logits)
    )
    if _dask.is_dask(y_pred) or _dask.is_dask(y_true):
        return _dask_function(
            sparse_categorical_crossentropy,
            y_true,
            y_pred,
            opts,
            dense=False,
            axis=axis,
            from_logits=from_logits,
            ignore_class=ignore_class,
            label_smoothing=label_smoothing,
            epsilon=epsilon,
            renormalize=renormalize,
            z_loss=z_loss,
            softcap=softcap,
        )
    out, _, _ = _sparse(
        y_true,
        y_pred,
        from_logits,
        ignore_class,
        axis,
        label_smoothing,
        epsilon,
        renormalize,
        opts if opts != _PLAIN else _PLAIN,
    )
    return out


@returns_like_inputs
def categorical_crossentropy(
    y_true,
    y_pred,
    from_logits=False,
    label_smoothing=0.0,
    axis=-1,
    *,
    epsilon=EPSILON,
    renormalize=True,
    z_loss=0.0,
    softcap=None,
    return_lse=False,
    return_z_loss=False,
):
    r"""Per-sample cross-entropy between target rows and predictions (Keras 3 semantics).

    One fused pass per row computes everything: no log-softmax array, no clipped copy.

    .. math::

        \ell = -\sum_c t'_c \log q_c, \qquad t' = (1 - \varepsilon)\, t + \varepsilon / C

    with :math:`q = \mathrm{softmax}(z)` for logits (computed as
    :math:`\sum_c t'_c\,(\mathrm{lse}(z) - z_c)`, where a logit of ``-inf`` with
    :math:`t'_c = 0` contributes 0), or for probabilities
    :math:`q = \mathrm{clip}(p / \sum_c p_c, \epsilon, 1 - \epsilon)`.

    Parameters
    ----------
    y_true : array_like, same shape as ``y_pred``
        One-hot or soft targets (any numeric dtype; integer one-hot is read as is).
    y_pred : array_like of float, shape ``(..., C, ...)``
        Probabilities (``from_logits=False``) or logits; float16 is computed in float32.
    from_logits : bool, default False
        Whether ``y_pred`` holds logits.
    label_smoothing : float in [0, 1], default 0
        :math:`\varepsilon` above; ``C`` is the size of ``axis``.
    axis : int, default -1
        The class axis.
    epsilon : float in [0, 0.5), default 1e-7
        Clipping bound for probabilities.
    renormalize : bool, default True
        Divide probability rows by their sum first (Keras).
    z_loss, softcap, return_lse, return_z_loss : keyword-only, logits only
        Large-vocabulary options, as in :func:`sparse_categorical_crossentropy`.

    Returns
    -------
    ndarray, shape ``y_pred.shape`` without ``axis``
        float64 for float64 predictions, float32 otherwise.

    See Also
    --------
    sparse_categorical_crossentropy : integer labels, by direct index gather.
    CategoricalCrossentropy : the loss object with reductions and sample weights.

    Examples
    --------
    >>> import xent
    >>> y_true = [[0, 1, 0], [0, 0, 1]]
    >>> y_pred = [[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]]
    >>> xent.categorical_crossentropy(y_true, y_pred)
    array([0.05129329, 2.30258509])
    >>> xent.categorical_crossentropy(y_true, [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], from_logits=True)
    array([1.40760596, 1.09861229])
    """
    opts = check_large_vocab(
        z_loss, softcap, return_lse, return_z_loss, from_logits=bool(from_logits)
    )
    if _dask.is_dask(y_pred) or _dask.is_dask(y_true):
        return _dask_function(
            categorical_crossentropy,
            y_true,
            y_pred,
            opts,
            dense=True,
            axis=axis,
            from_logits=from_logits,
            label_smoothing=label_smoothing,
            epsilon=epsilon,
            renormalize=renormalize,
            z_loss=z_loss,
            softcap=softcap,
        )
    out, _ = _dense(
        y_true,
        y_pred,
        from_logits,
        label_smoothing,
        axis,
        epsilon,
        renormalize,
        opts if opts != _PLAIN else _PLAIN,
    )
    return out
