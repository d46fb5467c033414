"""Input policy shared by every front end: dtypes, class axis, shapes, label validation.

Everything a kernel must be able to trust is established here: predictions are float32 or
float64 in native byte order, viewed as 2-D ``(rows, C)`` without copying when the layout
allows; labels are int64 in ``[0, C)`` or ``IGNORED``; targets have the predictions' shape.
Inputs are never written to.
"""

from __future__ import annotations

import numpy as np

from xent import _engine
from xent._engine import IGNORED
from xent._frameworks import as_bfloat16, dtype_name, is_bfloat16, to_numpy
from xent._numbers import check_number

_FLOAT_OK = (np.float16, np.float32, np.float64)


def _describe(arr: np.ndarray) -> str:
    return f"dtype {dtype_name(arr.dtype)}"


def _native(arr: np.ndarray) -> np.ndarray:
    """The array in native byte order (Numba cannot read byte-swapped data)."""
    if not arr.dtype.isnative:
        return arr.astype(arr.dtype.newbyteorder("="))
    return arr


def as_array(x, name: str) -> np.ndarray:
    """``np.asarray`` with an error that names the argument; torch tensors, JAX arrays and
    DLPack objects are read in place, bfloat16 as a ``BFLOAT16`` view (``_frameworks``)."""
    x = to_numpy(x, name)
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(f"{name} could not be converted to an array: {exc}") from exc


def as_predictions(y_pred, name: str = "y_pred", *, swapped_ok: bool = False) -> np.ndarray:
    """Float predictions (logits or probabilities): float32, float64, float16 or bfloat16
    (:data:`~xent._frameworks.BFLOAT16`), never copied unless byte-swapped.

    16-bit inputs are read as they are by the kernels and computed in float32; integer, bool,
    complex and object arrays, and other float widths, are a ``TypeError``.  Byte-swapped
    input is converted to native order (a copy), unless ``swapped_ok`` (callers that take a
    memory map block by block convert each block).
    """
    arr = y_pred if isinstance(y_pred, np.ndarray) else as_array(y_pred, name)
    if is_bfloat16(arr.dtype):  # ml_dtypes.bfloat16 (JAX's) or already BFLOAT16
        return as_bfloat16(arr)
    if arr.dtype.kind != "f":
        hint = ""
        if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 and arr.dtype.names is None:
            hint = (
                " (2-byte void is how np.save stores an ml_dtypes.bfloat16 array: pass "
                f"{name}.view(ml_dtypes.bfloat16))"
            )
        raise TypeError(
            f"{name} must hold floating-point scores (bfloat16, float16, float32 or float64), "
            f"got {_describe(arr)}{hint}"
        )
    if arr.dtype.type in _FLOAT_OK:
        return arr if swapped_ok else _native(arr)
    raise TypeError(f"{name} must be bfloat16, float16, float32 or float64, got {_describe(arr)}")


def check_axis(axis) -> int:
    """An integer axis (bool and floats are a ``TypeError``)."""
    return int(check_number(axis, "axis", integral=True))


def normalize_axis(axis, ndim: int, name: str = "y_pred") -> int:
    """``axis`` as a non-negative index into an array of ``ndim`` dimensions."""
    axis = check_axis(axis)
    if ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the class axis), got a scalar")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for {name} with {ndim} dimension(s)")
    return axis % ndim


def to_rows(arr: np.ndarray, axis: int, name: str = "y_pred") -> tuple[np.ndarray, tuple]:
    """``(rows, batch_shape)``: the class axis moved last and the rest flattened.

    ``rows`` is a view whenever NumPy can express it as one (any strides; the kernels
    accept them), otherwise a copy.  ``batch_shape`` is the input shape without the class
    axis, in order.
    """
    n_classes = arr.shape[axis]
    if n_classes == 0:
        raise ValueError(f"the class axis of {name} (axis={axis}) has size 0; shape {arr.shape}")
    moved = np.moveaxis(arr, axis, -1)
    return moved.reshape(-1, n_classes), moved.shape[:-1]


def check_fraction(value, name: str, *, upper_open: bool = False) -> float:
    """A real number in ``[0, 1]`` (``[0, 1)`` with ``upper_open``) as float."""
    v = float(check_number(value, name))
    ok = 0.0 <= v < 1.0 if upper_open else 0.0 <= v <= 1.0
    if not ok:
        interval = "[0, 1)" if upper_open else "[0, 1]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def check_epsilon(epsilon) -> float:
    """Clipping epsilon: a real number in ``[0, 0.5)``."""
    e = float(check_number(epsilon, "epsilon"))
    if not 0.0 <= e < 0.5:
        raise ValueError(f"epsilon must be in [0, 0.5), got {epsilon!r}")
    return e


def check_ignore_class(ignore_class, name: str = "ignore_class"):
    """``None`` or an integer label value."""
    if ignore_class is None:
        return None
    return int(check_number(ignore_class, name, integral=True, expected="None or an integer"))


def check_real(value, name: str, *, positive: bool = False) -> float:
    """A finite real number that is >= 0 (> 0 with ``positive``), as float."""
    v = float(check_number(value, name))
    if not np.isfinite(v) or v < 0.0 or (positive and v == 0.0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_finite(values: np.ndarray, name: str, where: str = "index") -> None:
    """``ValueError`` naming the first non-finite value and its position."""
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise ValueError(f"{name} has the non-finite value {values[k]!r} at {where} {k}")


def fit_weight_axes(w, shape: tuple, *, keras_rules: bool = False):
    """The axis rules of :func:`as_sample_weight` before broadcasting, for any array with
    ``ndim``, ``shape`` and NumPy indexing (NumPy or dask)."""
    shape = tuple(shape)
    if w.ndim == len(shape) + 1 and w.shape[-1] == 1:
        if keras_rules or tuple(w.shape[:-1]) == shape:
            return w[..., 0]
    elif keras_rules and w.ndim == len(shape) - 1 and w.ndim > 0:
        return w[..., None]
    return w


def as_sample_weight(
    sample_weight,
    shape: tuple,
    name: str = "sample_weight",
    *,
    keras_rules: bool = False,
    finite: bool = True,
) -> np.ndarray:
    """Numeric per-sample weights as float64 broadcast to ``shape`` (a read-only view when
    broadcasting): the one sample-weight policy of every front end.

    A trailing axis of size 1 beyond ``shape`` is squeezed.  ``keras_rules`` adds Keras's
    rule for one dimension fewer (a trailing axis is added: ``(N,)`` weights for ``(N, T)``
    losses weigh each sample's row) and applies the squeeze to any axis of size 1 in that
    place.  ``finite`` refuses NaN and infinite weights, naming the first and its position
    (Keras does not check; its front end passes ``finite=False``).
    """
    w = as_array(sample_weight, name)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numeric, got dtype {w.dtype}")
    shape = tuple(shape)
    w = fit_weight_axes(w.astype(np.float64), shape, keras_rules=keras_rules)
    try:
        w = np.broadcast_to(w, shape)
    except ValueError:
        raise ValueError(
            f"{name} has shape {np.shape(sample_weight)}, which does not broadcast to the "
            f"per-sample loss shape {shape}"
        ) from None
    if finite:
        check_finite(w.reshape(-1), name)
    return w


def as_class_weights(weight, n_classes: int, name: str = "weight") -> np.ndarray | None:
    """Per-class weights as a float64 array of length C (``None`` stays ``None``)."""
    if weight is None:
        return None
    w = as_array(weight, name)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numbers, got {_describe(w)}")
    if w.shape != (n_classes,):
        raise ValueError(
            f"{name} must have shape ({n_classes},) (one weight per class), got {w.shape}"
        )
    w = w.astype(np.float64)
    check_finite(w, name)
    return w


def _position(flat_index: int, shape: tuple) -> str:
    if len(shape) <= 1:
        return f"index {flat_index}"
    return f"index {tuple(int(i) for i in np.unravel_index(flat_index, shape))}"


#: Label dtypes the sparse kernels read as they are (others become int64 first): the compact
#: ones users hold (uint8 for datasets of up to 256 classes, int16, int32 from JAX/TensorFlow)
#: and int64.  Each is one more compiled specialisation of each sparse kernel.
NATIVE_LABEL_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.int16, np.int32, np.int64))


def as_labels(
    y_true,
    batch_shape: tuple,
    n_classes: int,
    *,
    axis: int,
    ignore_class=None,
    name: str = "y_true",
    pred_name: str = "y_pred",
    ignore_name: str = "ignore_class",
    integer_only: bool = False,
    row_offset: int | None = None,
    native: bool = False,
    range_check: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated integer labels as a flat int64 array, ignored entries set to ``IGNORED``.

    Returns ``(labels, valid)`` where ``valid`` is a boolean array of ``batch_shape``
    (``None`` when nothing is ignored: every entry counts).  Accepts any integer dtype and
    floats that hold whole numbers (never cast to a float type); a trailing size-1 axis is
    squeezed as Keras does.  Raises ``TypeError`` for bool/complex/object/string labels and
    ``ValueError`` naming the first offending value and its position for NaN, non-integral
    or out-of-range labels.  ``integer_only`` refuses floats (PyTorch and optax do);
    ``ignore_name`` is how the caller's API spells ``ignore_class`` in messages.
    ``row_offset``: the labels are one block of a longer input starting at that row, and
    positions are reported as ``row <offset + i>`` of the whole input.  ``native``: labels of
    a dtype in :data:`NATIVE_LABEL_DTYPES` with nothing ignored come back in their own dtype
    (no int64 copy: the sparse kernels read them as they are).  ``range_check=False`` leaves
    the range of integer labels to the kernel pass, which counts the labels outside the row
    (``_engine.sparse_losses``); the caller must then call :func:`check_counted_labels`.
    """
    y = as_array(y_true, name)
    kind = y.dtype.kind
    if integer_only and kind not in "iu":
        raise TypeError(f"{name} must hold integer class indices, got {_describe(y)}")
    if kind not in "iuf":
        raise TypeError(
            f"{name} must hold integer class labels (any integer dtype, or floats holding "
            f"whole numbers), got {_describe(y)}"
        )
    y = _native(y)
    batch_shape = tuple(batch_shape)
    if y.shape != batch_shape:
        # Keras: labels of the predictions' rank with size 1 at the class axis are squeezed
        # there; a trailing axis of size 1 is squeezed too
        ax = axis % y.ndim if y.ndim and -y.ndim <= axis < y.ndim else None
        if (
            y.ndim == len(batch_shape) + 1
            and ax is not None
            and y.shape[ax] == 1
            and y.shape[:ax] + y.shape[ax + 1 :] == batch_shape
        ):
            y = y.reshape(batch_shape)
        elif y.ndim == len(batch_shape) + 1 and y.shape[-1] == 1 and y.shape[:-1] == batch_shape:
            y = y[..., 0]
        else:
            raise ValueError(
                f"{name} has shape {y.shape} but {pred_name} with the class axis (axis={axis}) "
                f"removed has shape {batch_shape}; sparse labels need that shape "
                f"(or an axis of size 1 at the class axis or at the end)"
            )
    flat = y.reshape(-1)
    ignore_class = check_ignore_class(ignore_class, ignore_name)
    ignored = None if ignore_class is None else flat == ignore_class
    if ignored is not None and not ignored.any():
        # nothing ignored (PyTorch's ignore_index=-100 is on by default): the labels go as
        # they are, without the masked copies below (1,000,000 int64 labels: 7 -> 0.5 ms)
        ignored = None

    def where(k: int) -> str:
        return _position(k, y.shape) if row_offset is None else f"row {row_offset + k}"

    def fail(bad: np.ndarray, why: str):
        k = int(np.argmax(bad))
        raise ValueError(
            f"{name} has {why} {flat[k].item()!r} at {where(k)}; labels must be "
            f"integers in [0, {n_classes}) (the size of {pred_name}'s class axis, axis={axis})"
            + ("" if ignore_class is None else f" or {ignore_name}={ignore_class}")
        )

    if flat.size:
        if kind == "f":
            bad = ~np.isfinite(flat) if ignored is None else ~np.isfinite(flat) & ~ignored
            if bad.any():
                fail(bad, "the non-finite label")
            bad = flat != np.floor(flat)
            if ignored is not None:
                bad &= ~ignored
            if bad.any():
                fail(bad, "the non-integral label")
        # Range check: a cheap min/max first (one compiled pass for long integer labels;
        # neither where the dtype cannot hold an offending value), the mask only when
        # something is wrong.
        check = flat if ignored is None else flat[~ignored]
        low = kind == "f" or np.iinfo(flat.dtype).min < 0
        high = kind == "f" or np.iinfo(flat.dtype).max >= n_classes
        # integer labels keep their out-of-range values through the int64 cast below (uint64
        # wraps to negatives), so a kernel's count of labels outside the row sees them
        deferred = not range_check and kind in "iu"
        if check.size and (low or high) and not deferred:
            lo, hi = _engine.integer_range(check) if kind in "iu" else (check.min(), check.max())
            if (low and lo < 0) or (high and hi >= n_classes):
                bad = (flat < 0) | (flat >= n_classes)
                if ignored is not None:
                    bad &= ~ignored
                fail(bad, "the out-of-range label")
    if ignored is None and native and flat.dtype in NATIVE_LABEL_DTYPES:
        labels = np.ascontiguousarray(flat)  # strided labels would compile one more layout
    elif ignored is None:
        labels = flat.astype(np.int64, copy=flat.dtype != np.int64)
    else:
        # cast first: with an unsigned dtype, np.where would wrap IGNORED (-1) to 255 etc.
        labels = np.where(ignored, IGNORED, flat.astype(np.int64))
    valid = None if ignored is None else ~ignored.reshape(batch_shape)
    return labels, valid


def check_counted_labels(outside: int | None, valid, recheck) -> None:
    """The range check of labels read with ``as_labels(..., range_check=False)``, after the
    kernel pass: ``outside`` is the number of labels it found outside ``[0, C)``, the ignored
    entries (set to ``IGNORED``) included, ``valid`` the mask :func:`as_labels` returned.
    More than the ignored entries means a label out of range: ``recheck()`` reads the labels
    again with the range check, which raises the ``ValueError`` naming the first one.  A
    kernel that does not count (``outside`` is ``None``) leaves the whole check to
    ``recheck()``, as :func:`as_labels` makes it."""
    if outside is None:
        recheck()
        return
    ignored = 0 if valid is None else valid.size - int(np.count_nonzero(valid))
    if outside > ignored:
        recheck()
        raise AssertionError(f"{outside - ignored} labels outside the classes passed the check")


def as_targets(y_true, y_pred_shape: tuple, *, name: str = "y_true", pred_name: str = "y_pred"):
    """Dense targets (one-hot or soft) with the predictions' shape, in a kernel-readable dtype.

    Integer and 16-bit float targets stay as they are (the kernels read any numeric dtype, so
    no N x C copy is made); bool is viewed as uint8.
    """
    t = as_array(y_true, name)
    if is_bfloat16(t.dtype):
        t = as_bfloat16(t)
    elif t.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold numeric targets, got {_describe(t)}")
    if t.shape != tuple(y_pred_shape):
        raise ValueError(
            f"{name} and {pred_name} must have the same shape. Received: "
            f"{name}.shape={t.shape}, {pred_name}.shape={tuple(y_pred_shape)} (dense targets "
            f"need the predictions' shape; use the sparse loss for integer labels)"
        )
    t = _native(t)
    if t.dtype.kind == "b":
        return t.view(np.uint8)
    if t.dtype.kind == "f" and t.dtype.type not in _FLOAT_OK:
        return t.astype(np.float64)
    return t
