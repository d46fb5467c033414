"""The one door to ``xent.kernels``: canonical 2-D inputs in, per-row losses out.

Front ends never call a kernel directly; they ask for row losses here, so a kernel can be
rewritten for speed without touching any front end.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

from xent import kernels
from xent._threading import ensure_threading_layer, serial_only

#: The label marking rows that do not count (ignored class / index), as the kernels read it.
IGNORED = kernels.IGNORED
#: The evaluation kernels' tie policies and the columns of their per-row statistics.
EVAL_TIES = {
    "stable": kernels.evaluate.TIES_STABLE,
    "optimistic": kernels.evaluate.TIES_OPTIMISTIC,
    "pessimistic": kernels.evaluate.TIES_PESSIMISTIC,
}
STAT_LSE, STAT_ENTROPY, STAT_PTRUE = (
    kernels.evaluate.STAT_LSE,
    kernels.evaluate.STAT_ENTROPY,
    kernels.evaluate.STAT_PTRUE,
)
#: The slots of the evaluation sums' ``scalars`` (see :func:`evaluation_sums`), by name.
EVAL_SUMS = {
    name.lower(): getattr(kernels.evaluate, name)
    for name in dir(kernels.evaluate)
    if name.startswith("SUM_")
}
N_EVAL_SUMS = kernels.evaluate.N_SUMS

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
    return kernels.row_sums(kernel_view(x), out)


def float64_total(values: np.ndarray, known: float | None = None) -> float:
    """``sum(values)`` in float64, in an order that does not depend on the thread count:
    ``known`` if given (the kernel's own total, :class:`RowLosses`), float32 arrays
    by a compiled loop (NumPy's float64 sum of float32 converts element by element: 4x
    slower on a loss array just written), anything else by NumPy."""
    if known is not None:
        return known
    if values.dtype == np.float32 and values.ndim == 1:
        return float(kernels.float64_total(values))
    return float(np.sum(values, dtype=np.float64))


#: Integer arrays at least this long get their range from one compiled pass; shorter ones from
#: NumPy's ``min()`` and ``max()`` (a compile per integer dtype is not worth 0.1 ms).
RANGE_KERNEL_MIN = 1 << 16


def integer_range(values: np.ndarray) -> tuple[int, int]:
    """``(min, max)`` of a non-empty 1-D integer array of native byte order: one compiled pass
    over long C-contiguous arrays (half the time of NumPy's two), NumPy's otherwise."""
    if values.shape[0] >= RANGE_KERNEL_MIN and values.flags.c_contiguous:
        lo, hi = kernels.integer_range(values)
        return int(lo), int(hi)
    return int(values.min()), int(values.max())


def exp_floor(x: np.ndarray) -> Callable[[], float]:
    """The compute baseline for ``x``: a no-argument callable that takes as many ``exp`` as
    ``x`` has elements (at least), from a cache-resident piece of ``x`` re-read on all
    threads, with the kernels' own vectorised ``2**u``; it returns a checksum."""
    ready()
    rows = -(-kernels.EXP_FLOOR_PIECE // max(1, x.shape[-1]))  # enough rows for one piece
    piece = np.ascontiguousarray(kernel_view(x)[:rows].reshape(-1)[: kernels.EXP_FLOOR_PIECE])
    repeats = max(1, -(-x.size // piece.shape[0]))
    out = np.empty(repeats)
    return lambda: float(kernels.exp_floor(piece, repeats, out)[0]) if x.size else 0.0


def exp_vector_bits() -> int | None:
    """The vector width of the kernels' ``2**u`` loops on this CPU: 512 where the CPU has
    AVX-512, 256 where it has AVX2 and FMA (the explicit 16- and 8-lane float32 loops of
    ``kernels/_simd.py``), else the width LLVM chose for a probe loop of the scalar code's
    shape and flags, compiled here (not cached): the widest register its machine code uses
    (512: zmm, 256: ymm, 128: xmm).  ``None`` off x86-64."""
    import platform
    import re

    from numba import njit

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    if kernels.vector_lanes():
        return 32 * kernels.vector_lanes()

    @njit(**{**kernels.ROW_OPTIONS, "cache": False})
    def probe(x):
        acc = np.float32(0.0)
        for j in range(x.shape[0]):
            acc += kernels.fast_exp2(x[j])
        return acc

    probe(np.zeros(64, np.float32))
    asm = "".join(probe.inspect_asm().values())
    for bits, reg in ((512, "zmm"), (256, "ymm"), (128, "xmm")):
        if re.search(rf"%{reg}\d", asm):
            return bits
    return None


def row_scale(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """The gradient's bandwidth baseline: ``out = x / 2`` (reads ``x`` once, writes ``out``)."""
    ready()
    kernels.row_scale(kernel_view(x), kernel_view(out))
    return out


def _balanced(parallel_kernel):
    """``parallel_kernel`` launched with its parallel loop's pieces (``kernels.ROW_CHUNKS`` at
    most, every kernel's loop runs over such pieces) handed to the threads one at a time,
    as each finishes the last, instead of Numba's default of one equal share per thread.

    Why: a thread that runs slower for a while (another process or virtual machine on its
    core, a lower clock) then takes fewer pieces instead of holding the others up at the
    end.  Measured on 2 cores of a shared Intel Xeon (emeraldrapids) whose cores, timed one
    at a time, ran at 1x or 1.4x by turns: with the second core shared with a busy process
    (the workers pinned one per core), 1,000,000 x 10 sparse 0.74x and dense 0.92x the
    time, 100,000 x 1,000 1.02-1.04x; without the busy process 0.96-1.01x (0.90-0.92x in one
    run of the 1,000,000 x 10 losses).  Results do not change: a row's result and a chunk's
    sum never depend on the thread computing them.
    (``numba.parallel_chunksize`` is per calling thread and restored on exit.)
    """

    def launch(*args):
        with numba.parallel_chunksize(1):
            return parallel_kernel(*args)

    launch.__wrapped__ = parallel_kernel  # the dispatcher, for its compiled signatures
    return launch


def _kernel(parallel_kernel):
    """The kernel to launch: its serial build in a child forked from an OpenMP parent, else
    the parallel one with its pieces balanced over the threads (:func:`_balanced`)."""
    if serial_only():
        return kernels.serial(parallel_kernel)
    return _balanced(parallel_kernel)


def result_dtype(dtype) -> np.dtype:
    """The dtype computed in and returned for inputs of ``dtype``: float32 for 16-bit floats
    (bfloat16, float16) and float32 itself, float64 for float64."""
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def kernel_view(arr: np.ndarray) -> np.ndarray:
    """``arr`` as the kernels read it: 16-bit floats as a view of their bits (float16 as
    uint16, bfloat16 as int16: ``kernels/_half.py``), anything else unchanged, never copied;
    except that dense targets of dtype int16/uint16, which the kernels would take for 16-bit
    floats, become int32 (a copy, for that rare target dtype only).  Read-only arrays are
    passed as :func:`writable_alias`."""
    if arr.dtype == np.float16:
        arr = arr.view(kernels.FLOAT16_BITS)
    elif arr.dtype.itemsize == 2 and arr.dtype.kind == "V":  # BFLOAT16 or ml_dtypes.bfloat16
        arr = arr.view(kernels.BFLOAT16_BITS)
    elif arr.dtype in (np.int16, np.uint16):
        return arr.astype(np.int32)
    return writable_alias(arr)


def writable_alias(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself, or for a read-only ``arr`` a writable array over the same memory (no
    copy; it keeps ``arr`` alive).

    Numba types a read-only array apart from a writable one, so each kernel would be compiled
    a second time for read-only input (JAX arrays seen through NumPy, memory maps opened
    ``'r'``, broadcasts), seconds per kernel on a user's first call.  Kernels never write
    their inputs (the tests check every input byte for byte), so the flag tells them nothing.
    """
    if arr.flags.writeable:
        return arr
    if arr.size == 0:
        return np.empty(arr.shape, arr.dtype)
    steps = list(zip(arr.shape, arr.strides))
    low = sum(stride * (n - 1) for n, stride in steps if stride < 0)
    high = sum(stride * (n - 1) for n, stride in steps if stride > 0) + arr.itemsize
    memory = (ctypes.c_char * (high - low)).from_address(arr.ctypes.data + low)
    memory.source = arr  # the alias holds ``memory``, ``memory`` holds ``arr``
    return np.ndarray(arr.shape, arr.dtype, buffer=memory, offset=-low, strides=arr.strides)


def _clip_bounds(dtype, epsilon: float):
    t = result_dtype(dtype).type
    return t(epsilon), t(1.0) - t(epsilon)


@dataclass(frozen=True)
class RowOptions:
    """What a kernel computes besides the plain loss; built by the front ends from values
    they have validated (``_inputs``, ``_vocab``), checked here for consistency once.

    ``smoothing``: label smoothing in [0, 1]; ``epsilon`` / ``renormalize``: clipping and
    renormalisation of probabilities; ``want_lse``: write the per-row log-sum-exp;
    ``class_weights``: float64 ``(C,)``; ``softcap``: ``c tanh(z / c)`` (0: none);
    ``class_mask``: bool ``(N, C)`` of classes that stay in the normaliser (any strides).
    The last four need logits.
    """

    from_logits: bool = True
    smoothing: float = 0.0
    epsilon: float = EPSILON
    renormalize: bool = True
    want_lse: bool = False
    class_weights: np.ndarray | None = None
    softcap: float = 0.0
    class_mask: np.ndarray | None = None

    def __post_init__(self):
        # plain Python scalars: a kernel is compiled once per argument type
        for name, cast in (
            ("from_logits", bool),
            ("smoothing", float),
            ("epsilon", float),
            ("renormalize", bool),
            ("want_lse", bool),
            ("softcap", float),
        ):
            object.__setattr__(self, name, cast(getattr(self, name)))
        if not self.from_logits and self.used() & {
            "want_lse",
            "class_weights",
            "softcap",
            "class_mask",
        }:
            raise AssertionError("lse, class weights, soft-capping and masks need logits")

    def used(self) -> frozenset:
        """The optional features this call needs (the capability table's vocabulary)."""
        flags = {
            "smoothing": self.smoothing != 0.0,
            "want_lse": self.want_lse,
            "class_weights": self.class_weights is not None,
            "softcap": self.softcap != 0.0,
            "class_mask": self.class_mask is not None,
        }
        return frozenset(name for name, on in flags.items() if on)


#: Rows at least this long are split over the threads when there are fewer rows than threads.
LONG_ROW = 131_072  # measured: shorter rows lose more to the parallel launch than they gain
_NO_WEIGHTS = np.empty(0, np.float64)
_NO_MASK = np.empty((0, 0), np.bool_)


def _weights(o: RowOptions):
    return _NO_WEIGHTS if o.class_weights is None else o.class_weights


def _mask(o: RowOptions):
    return _NO_MASK if o.class_mask is None else o.class_mask


def _long_rows(rows) -> bool:
    """Fewer rows than threads, each long: split every row over the threads.  (The split
    kernels launch parallel loops from inside; a process that must run serially skips them.)"""
    return (
        rows.shape[0] < numba.get_num_threads() and rows.shape[1] >= LONG_ROW and not serial_only()
    )


def _short_rows(rows) -> bool:
    """Rows of at most ``SHORT_ROW_BYTES`` as stored: turned row blocks, rows in the SIMD
    lanes.  (16-bit rows of up to 96 classes: measured 10-40% faster than the per-row kernel
    for the sparse loss, widened to float32 as they are turned.)"""
    return rows.shape[1] * rows.itemsize <= kernels.SHORT_ROW_BYTES


def _short_dense_rows(rows) -> bool:
    """:func:`_short_rows` counted in the type computed in: the dense kernel turns targets
    too, and for 16-bit rows of 64-96 classes the per-row kernel was faster (measured)."""
    return rows.shape[1] * result_dtype(rows.dtype).itemsize <= kernels.SHORT_ROW_BYTES


def _any_rows(rows) -> bool:
    return True


@dataclass(frozen=True)
class _Kernel:
    """One row of the capability table: which kernel, for which inputs and rows, with which
    optional features, and how its arguments are laid out."""

    kernel: object
    kind: str  # "sparse" (int64 labels) or "dense" (target rows)
    logits: bool  # logits (True) or probabilities (False)
    fits: Callable  # rows -> whether this kernel is meant for rows of this shape
    supports: frozenset
    launch: Callable  # (kernel, rows, second, options, loss, lse, *chunk outputs) -> None
    chunk_sums: bool = False  # takes the per-chunk outputs (:func:`_chunk_outputs`) last


_LOGITS_ALL = frozenset({"smoothing", "want_lse", "class_weights", "softcap", "class_mask"})
_PLAIN = frozenset({"smoothing", "want_lse", "class_weights"})


# How each family of kernels takes its arguments: (kernel, rows, second, options, loss, lse,
# *chunk outputs); the chunk outputs are empty but for kernels with ``chunk_sums``.
def _launch_plain(k, r, s, o, loss, lse, *chunks):
    k(r, s, o.smoothing, _weights(o), loss, lse, *chunks)


def _launch_dense_split(k, r, s, o, loss, lse):
    k(r, s, o.smoothing, loss, lse)


def _launch_logits(k, r, s, o, loss, lse):
    k(r, s, o.smoothing, _weights(o), o.softcap, _mask(o), loss, lse)


def _launch_probs(k, r, s, o, loss, lse, *chunks):
    k(r, s, o.smoothing, *_clip_bounds(r.dtype, o.epsilon), o.renormalize, loss, *chunks)


_SMOOTHING = frozenset({"smoothing"})

#: Every kernel and what it supports, most specialised first: the first row whose kind,
#: input, shape test and supported features cover a call runs it.
# fmt: off
TABLE = (
    #       kernel                            kind      logits  rows         supports
    _Kernel(kernels.sparse_logits_long_rows,  "sparse", True,  _long_rows,  _PLAIN,
            _launch_plain),
    _Kernel(kernels.dense_logits_long_rows,   "dense",  True,  _long_rows,
            frozenset({"smoothing", "want_lse"}), _launch_dense_split),
    _Kernel(kernels.sparse_logits_short_rows, "sparse", True,  _short_rows, _PLAIN,
            _launch_plain, chunk_sums=True),
    _Kernel(kernels.dense_logits_short_rows,  "dense",  True,  _short_dense_rows, _PLAIN,
            _launch_plain, chunk_sums=True),
    _Kernel(kernels.sparse_logits,            "sparse", True,  _any_rows,   _LOGITS_ALL,
            _launch_logits),
    _Kernel(kernels.dense_logits,             "dense",  True,  _any_rows,   _LOGITS_ALL,
            _launch_logits),
    _Kernel(kernels.sparse_probs_short_rows,  "sparse", False, _short_rows, frozenset(),
            _launch_probs, chunk_sums=True),
    _Kernel(kernels.sparse_probs,             "sparse", False, _any_rows,   _SMOOTHING,
            _launch_probs),
    _Kernel(kernels.dense_probs_short_rows,   "dense",  False, _short_dense_rows, _SMOOTHING,
            _launch_probs, chunk_sums=True),
    _Kernel(kernels.dense_probs,              "dense",  False, _any_rows,   _SMOOTHING,
            _launch_probs),
)
# fmt: on


def choose(kind: str, rows, options: RowOptions) -> _Kernel:
    """The table's first kernel for this call."""
    used = options.used()
    for entry in TABLE:
        if (
            entry.kind == kind
            and entry.logits == options.from_logits
            and used <= entry.supports
            and entry.fits(rows)
        ):
            return entry
    raise AssertionError(f"no kernel for {kind}, logits={options.from_logits}, {sorted(used)}")


def _chunk_outputs(kind, wanted: bool):
    """The per-chunk outputs a ``chunk_sums`` kernel takes last: float64 loss totals and, for
    sparse kernels, int64 counts of labels outside the row (``kernels.short_rows``,
    ``chunk_total`` / ``block_outside``), ``ROW_CHUNKS`` each, or empty when not wanted."""
    n = kernels.ROW_CHUNKS if wanted else 0
    total = np.zeros(n)
    return (total,) if kind == "dense" else (total, np.zeros(n, np.int64))


def _rows(kind, rows, second, options: RowOptions, lse64=False, sums=False):
    ready()
    n = rows.shape[0]
    want_lse = options.want_lse
    out = result_dtype(rows.dtype)
    # the kernels write the lse in float64 (one compiled signature either way): a gradient
    # from a saved lse needs more than its float32 rounding (kernels/grad.py, split_lse)
    loss, lse = np.empty(n, out), np.empty(n if want_lse else 0, np.float64)
    entry = choose(kind, rows, options)
    chunks = _chunk_outputs(kind, sums) if entry.chunk_sums else ()
    kernel = _kernel(entry.kernel)  # never a split kernel's serial build: see _long_rows
    # sparse labels are read as integers (any width), never as the bits of 16-bit floats
    second = writable_alias(second) if kind == "sparse" else kernel_view(second)
    entry.launch(kernel, kernel_view(rows), second, options, loss, lse, *chunks)
    if want_lse and not lse64:
        lse = lse.astype(out, copy=False)
    lse = lse if want_lse else None
    if not (sums and entry.chunk_sums):
        return loss, lse, None, None
    # the chunks' partials in chunk order: a fixed number, whatever the thread count
    outside = int(chunks[1].sum()) if kind == "sparse" else 0
    return loss, lse, float(np.sum(chunks[0])), outside


def sparse_rows(rows, labels, options: RowOptions = RowOptions(), *, lse64=False):
    """Per-row sparse cross-entropy (and log-sum-exp of logits on request).

    ``rows``: float32/float64, or float16/bfloat16 read as they are, ``(N, C)``; ``labels``:
    ``(N,)`` validated, int64 (``IGNORED`` for rows that give 0) or one of the narrower
    ``_inputs.NATIVE_LABEL_DTYPES``.  Returns ``(loss, lse)``,
    both of :func:`result_dtype`; ``lse`` is ``None`` unless ``options.want_lse``, float64
    with ``lse64`` (what a gradient from the saved lse needs: :func:`grad_rows`).
    """
    return _rows("sparse", rows, labels, options, lse64)[:2]


def dense_rows(rows, targets, options: RowOptions = RowOptions(), *, lse64=False):
    """Per-row categorical cross-entropy against target rows of the same shape; as
    :func:`sparse_rows` (class weights multiply the targets, as PyTorch does)."""
    return _rows("dense", rows, targets, options, lse64)[:2]


@dataclass(frozen=True)
class RowLosses:
    """What :func:`sparse_losses` / :func:`dense_losses` return.

    ``loss`` and ``lse`` as from :func:`sparse_rows`; ``total`` the float64 sum of ``loss``
    where the kernel took it (the short-row kernels, from their chunks while the losses were
    in cache), else ``None`` (the caller sums, :func:`float64_total`), in an order that does
    not depend on the thread count; ``outside`` the number of labels outside ``[0, C)``,
    ``IGNORED`` ones included, where the kernel counted them, else ``None`` (0 for dense
    targets).
    """

    loss: np.ndarray
    lse: np.ndarray | None
    total: float | None
    outside: int | None


def sparse_losses(rows, labels, options: RowOptions = RowOptions()) -> RowLosses:
    """:func:`sparse_rows` for the front ends' reductions, with the losses' total and the
    count of labels outside the row, for labels that were not range-checked before
    (``_inputs.as_labels`` with ``range_check=False``; the caller raises if ``outside``
    exceeds its ignored entries, and runs the usual check where it is ``None``:
    ``_inputs.check_counted_labels``).  The short-row kernels count the labels as they go.
    Every sparse kernel gives NaN for a label outside the row without reading it
    (``stream.sparse_row_loss``, ``short_rows.block_outside``), so unchecked labels never
    make a kernel read outside its input."""
    return RowLosses(*_rows("sparse", rows, labels, options, sums=True))


def dense_losses(rows, targets, options: RowOptions = RowOptions()) -> RowLosses:
    """:func:`dense_rows` with the losses' total, as :func:`sparse_losses`."""
    loss, lse, total, _ = _rows("dense", rows, targets, options, sums=True)
    return RowLosses(loss, lse, total, 0)


_NO_ROWS = np.empty(0, np.float64)


def grad_rows(
    kind, rows, second, options: RowOptions, g_loss, g_zsq, *, g_lse=None, lse=None, out=None
):
    """Per-row loss and log-sum-exp of logits with ``d/d rows`` of
    ``sum_i g_loss[i] loss_i + g_zsq[i] lse_i**2 + g_lse[i] lse_i``, by one fused pass.

    ``kind``/``rows``/``second``/``options`` as for :func:`sparse_rows` / :func:`dense_rows`
    (logits only); ``g_loss``, ``g_zsq``, ``g_lse`` float64 ``(N,)`` (``g_lse`` optional).
    Given ``lse`` (saved by a forward pass), only the gradient is computed and ``(None,
    None, grad)`` is returned.  ``out``: an ``(N, C)`` array of ``rows``' dtype to write the
    gradient into (``rows`` itself for in place); by default a new C-ordered array.
    Returns ``(loss, lse, grad)``; the gradient has ``rows``' dtype (16-bit floats rounded from
    float32), the loss and lse :func:`result_dtype`.
    """
    if not options.from_logits:
        raise AssertionError("gradients are computed for logits")
    ready()
    n = rows.shape[0]
    res = result_dtype(rows.dtype)
    grad = np.empty(rows.shape, rows.dtype) if out is None else out
    if _short_grad(kind, rows, second, options, grad):
        return _short_rows_grad(kind, rows, second, options, g_loss, g_zsq, g_lse, lse, grad)
    given = lse is not None
    loss = np.empty(0 if given else n, res)
    lse_out = np.empty(0 if given else n, res)
    kernel = kernels.sparse_logits_grad if kind == "sparse" else kernels.dense_logits_grad
    _kernel(kernel)(
        kernel_view(rows),
        kernel_view(second),
        options.smoothing,
        _weights(options),
        options.softcap,
        _mask(options),
        np.ascontiguousarray(g_loss, np.float64),
        np.ascontiguousarray(g_zsq, np.float64),
        _NO_ROWS if g_lse is None else np.ascontiguousarray(g_lse, np.float64),
        _NO_ROWS if lse is None else np.ascontiguousarray(lse, np.float64),
        loss,
        lse_out,
        kernel_view(grad),
    )
    if given:
        return None, None, grad
    return loss, lse_out, grad


def _short_grad(kind, rows, second, options: RowOptions, grad) -> bool:
    """Short rows (as the turned forward kernels take them) with plain options and
    C-contiguous arrays: the forward's turned kernel for the lse, then one flat loop per
    block of rows for the gradient (1,000,000 x 10 float32: 2.x times faster than the
    per-row gradient kernel, measured)."""
    short = _short_rows(rows) if kind == "sparse" else _short_dense_rows(rows)
    plain = not (options.used() & {"class_weights", "softcap", "class_mask"})
    contiguous = rows.flags.c_contiguous and grad.flags.c_contiguous
    if kind == "dense":
        contiguous = contiguous and second.flags.c_contiguous
    return short and plain and contiguous


def _short_rows_grad(kind, rows, second, options, g_loss, g_zsq, g_lse, lse, grad):
    loss = None
    if lse is None:
        forward = dense_rows if kind == "dense" else sparse_rows
        loss, lse = forward(rows, second, dataclasses.replace(options, want_lse=True), lse64=True)
    kernel = kernels.sparse_short_rows_grad if kind == "sparse" else kernels.dense_short_rows_grad
    _kernel(kernel)(
        kernel_view(rows),
        kernel_view(second),
        options.smoothing,
        np.ascontiguousarray(g_loss, np.float64),
        np.ascontiguousarray(g_zsq, np.float64),
        _NO_ROWS if g_lse is None else np.ascontiguousarray(g_lse, np.float64),
        np.ascontiguousarray(lse, np.float64),
        kernel_view(grad),
        bool(grad.ctypes.data == rows.ctypes.data),  # in place (both C-contiguous)
    )
    return loss, (None if loss is None else lse.astype(loss.dtype, copy=False)), grad


def probability_checks(rows):
    """``(row sums in float64, per-row count of entries outside [0, 1] or NaN)``."""
    ready()
    n = rows.shape[0]
    sums, bad = np.empty(n), np.empty(n, np.int64)
    _kernel(kernels.probability_rows)(kernel_view(rows), sums, bad)
    return sums, bad


def evaluation_rows(kind, pred, second, *, from_logits, epsilon, ties=0, want_argmax=False):
    """Per-row loss, rank of the true class, statistics and arg-max from the fused
    evaluation kernel.

    ``kind`` is ``"sparse"`` (``second``: int64 labels, ``IGNORED`` rows give loss 0 and rank
    -1) or ``"dense"`` (``second``: target rows; the true class is each row's first arg-max).
    ``ties`` is one of ``kernels.evaluate.TIES_*``.  Returns ``(loss of
    result_dtype(pred.dtype), rank int64, stats float64 (N, N_STATS), argmax int64 or None,
    true class int64)``; the columns of ``stats`` are ``kernels.evaluate.STAT_*``; the true
    class is ``second`` itself for sparse labels.
    """
    ready()
    n = pred.shape[0]
    lo, hi = _clip_bounds(pred.dtype, epsilon)
    loss, rank = np.empty(n, result_dtype(pred.dtype)), np.empty(n, np.int64)
    stats = np.empty((n, kernels.evaluate.N_STATS))
    argmax = np.empty(n if want_argmax else 0, np.int64)
    args = [bool(from_logits), lo, hi, _NO_WEIGHTS, int(ties), loss, rank, stats, argmax]
    if kind == "sparse":
        true = second
        _kernel(kernels.evaluate_sparse)(kernel_view(pred), writable_alias(second), *args)
    else:
        true = np.empty(n, np.int64)
        _kernel(kernels.evaluate_dense)(kernel_view(pred), kernel_view(second), *args, true)
    return loss, rank, stats, (argmax if want_argmax else None), true


_NO_INDICES = np.empty(0, np.int64)


def evaluation_sums(loss, rank, stats, argmax, weight, true, ks, sums):
    """Add one block's per-row evaluation outputs into ``sums`` (a dict of float64 arrays:
    ``scalars`` (slots ``kernels.evaluate.SUM_*``), ``hits``, ``w2_hits``, ``bins``,
    ``classes``, ``confusion``), serially in row order."""
    kernels.evaluation_sums(
        loss,
        rank,
        stats,
        _NO_INDICES if argmax is None else argmax,
        _NO_WEIGHTS if weight is None else np.ascontiguousarray(weight, np.float64),
        true,
        np.asarray(ks, np.int64),
        sums["scalars"],
        sums["hits"],
        sums["w2_hits"],
        sums["bins"],
        sums["classes"],
        sums["confusion"],
    )
