"""Benchmark registry and runner: xent's kernels, the NumPy baseline and installed peers.

One registry (:data:`REGISTRY`) drives both ``xent bench`` and the pytest-benchmark suite in
``benchmarks/``; every entry also checks its result against a float64 NumPy evaluation of the
formula.  Throughput is reported in GB/s of the arrays the call is given, and against plain
Numba row sums over the same logits and targets measured in the same run (the memory limit).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable

import numpy as np

import xent
from xent._bench_report import (
    BASELINE,
    FLOOR,
    LIMITS,
    TARGETS_BASELINE,
    _threading_layer,
    format_table,
    machine_info,
    plot,
)
from xent._frameworks import BFLOAT16

#: 16-bit dtypes a case may have; NumPy holds bfloat16 as its bits (``BFLOAT16``).
HALF_DTYPES = ("bfloat16", "float16")


def _to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (nearest, ties to even) as a ``BFLOAT16`` array."""
    bits = x.astype(np.float32, copy=False).view(np.uint32)
    rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
    return rounded.astype(np.uint16).view(BFLOAT16)


def widened(x: np.ndarray) -> np.ndarray:
    """Scores of any case dtype as float32 (16-bit) or themselves."""
    if x.dtype == BFLOAT16:
        return (x.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32) if x.dtype == np.float16 else x


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark input: ``rows x classes`` of ``dtype``, logits or probabilities."""

    rows: int
    classes: int
    dtype: str = "float32"
    inputs: str = "logits"  # or "probs"
    task: str = "loss"  # or "grad": forward + backward (the loss and d loss / d logits)
    labels: str = "int64"  # the integer labels' dtype (uint8: a dataset of up to 256 classes)

    @property
    def label(self) -> str:
        grad = " fwd+bwd" if self.task == "grad" else ""
        labels = "" if self.labels == "int64" else f" {self.labels} labels"
        return f"{self.rows:,}x{self.classes:,} {self.dtype} {self.inputs}{labels}{grad}"


@dataclasses.dataclass
class Data:
    case: Case
    scores: np.ndarray  # logits or probabilities, (N, C)
    labels: np.ndarray  # (N,) of the case's label dtype
    onehot: np.ndarray  # (N, C), scores' dtype

    @classmethod
    def make(cls, case: Case, seed: int = 0) -> Data:
        rng = np.random.default_rng(seed)
        bf16 = case.dtype == "bfloat16"
        dtype = np.dtype(np.float32 if bf16 else case.dtype)
        z = rng.standard_normal((case.rows, case.classes), dtype=np.float32).astype(
            dtype, copy=False
        )
        if case.inputs == "probs":
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
        labels = rng.integers(0, case.classes, case.rows).astype(case.labels)
        onehot = np.zeros(z.shape, dtype)
        onehot[np.arange(case.rows), labels] = 1
        if bf16:
            z, onehot = _to_bfloat16(z), _to_bfloat16(onehot)
        return cls(case, z, labels, onehot)


@dataclasses.dataclass(frozen=True)
class Impl:
    """A registered implementation: ``make(data)`` returns a no-argument callable giving the mean
    loss (a float), or ``None`` when the implementation does not apply to the case."""

    name: str
    loss: str  # "sparse", "dense" or "baseline"
    make: Callable[[Data], Callable[[], float] | None]
    requires: str | None = None  # module that must be importable
    bytes_read: Callable[[Data], int] | None = None
    #: of those bytes, the dense targets' (timed against the targets' own row sum); by
    #: default the targets array for a dense loss, none otherwise
    target_bytes_read: Callable[[Data], int] | None = None
    task: str | None = "loss"  # the cases it runs on ("loss", "grad"; None: both)
    #: what is checked of a gradient implementation's result (outside the timing)
    summary: Callable[[Data, object], float] | None = None
    #: compiles for tens of seconds per shape (torch.compile): left out of ``--quick``
    slow_to_make: bool = False

    def available(self) -> bool:
        if self.requires is None:
            return True
        try:
            __import__(self.requires)
        except Exception:
            return False
        return True

    def nbytes(self, data: Data) -> int:
        """Bytes the call must move: its inputs, and for a gradient the gradient written."""
        if self.bytes_read is not None:
            return self.bytes_read(data)
        n = data.scores.nbytes * (2 if self.task == "grad" else 1)
        return n + (data.onehot.nbytes if self.loss == "dense" else data.labels.nbytes)

    def target_bytes(self, data: Data) -> int:
        """Of :meth:`nbytes`, the bytes of the dense targets."""
        if self.target_bytes_read is not None:
            return self.target_bytes_read(data)
        return data.onehot.nbytes if self.loss in ("dense", TARGETS_BASELINE) else 0

    def runs_on(self, case: Case) -> bool:
        return self.task is None or self.task == case.task

    def checked(self, data: Data, value) -> float:
        return value if self.summary is None else self.summary(data, value)


# ---------------------------------------------------------------- implementations
def _xent_sparse(data: Data, **kw):
    loss = xent.SparseCategoricalCrossentropy(from_logits=data.case.inputs == "logits", **kw)
    return lambda: float(loss(data.labels, data.scores))


def _xent_dense(data: Data):
    loss = xent.CategoricalCrossentropy(from_logits=data.case.inputs == "logits")
    return lambda: float(loss(data.onehot, data.scores))


def _xent_float32(data: Data, sparse: bool):
    """xent on a float32 copy of a 16-bit case's values (the copy is made before timing)."""
    if data.case.dtype not in HALF_DTYPES:
        return None
    wide = Data(data.case, widened(data.scores), data.labels, widened(data.onehot))
    return _xent_sparse(wide) if sparse else _xent_dense(wide)


def _float32_bytes(sparse: bool):
    return lambda d: 2 * d.scores.nbytes + (d.labels.nbytes if sparse else 2 * d.onehot.nbytes)


def _xent_gather(data: Data):
    if data.case.inputs != "probs":
        return None
    return _xent_sparse(data, renormalize=False)


def _gather_bytes(data: Data) -> int:
    # one 64-byte cache line per row, plus the labels
    return data.case.rows * 64 + data.labels.nbytes


def numpy_mean_loss(scores: np.ndarray, labels: np.ndarray, inputs: str) -> float:
    """Mean sparse loss written with plain NumPy array operations, in ``scores``' dtype."""
    idx = np.arange(len(labels))
    if inputs == "logits":
        m = scores.max(axis=1)
        lse = np.log(np.exp(scores - m[:, None]).sum(axis=1)) + m
        return float(np.mean(lse - scores[idx, labels]))
    p = scores / scores.sum(axis=1, keepdims=True)
    return float(np.mean(-np.log(np.clip(p[idx, labels], 1e-7, 1 - 1e-7))))


def _numpy_sparse(data: Data):
    if data.case.dtype == "bfloat16":
        return None  # NumPy has no bfloat16 arithmetic
    return lambda: numpy_mean_loss(data.scores, data.labels, data.case.inputs)


def _torch_tensor(x: np.ndarray):
    """A torch tensor sharing ``x``'s memory (bfloat16 from its bits)."""
    import torch

    if x.dtype == BFLOAT16:
        return torch.from_numpy(x.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(x)


def _jax_array(x: np.ndarray):
    """``x`` as a JAX array, made inside :func:`_jax_precision` (checked: a float array keeps
    its dtype, which JAX would otherwise truncate to float32)."""
    import jax.numpy as jnp

    if x.dtype == BFLOAT16:
        return jnp.asarray(x.view(np.uint16)).view(jnp.bfloat16)
    out = jnp.asarray(x)
    if x.dtype.kind == "f" and np.dtype(out.dtype) != x.dtype:
        raise RuntimeError(f"JAX holds a {x.dtype} array as {out.dtype}")
    return out


def _torch_sparse(data: Data):
    import torch

    z = _torch_tensor(data.scores)
    y = torch.from_numpy(data.labels)
    # PyTorch takes int64 class indices only: narrower labels are widened in the call, as a
    # PyTorch user holding them must
    to_long = (lambda t: t.long()) if y.dtype != torch.int64 else (lambda t: t)
    if data.case.inputs == "logits":
        return lambda: float(torch.nn.functional.cross_entropy(z, to_long(y)))
    log_z = lambda: torch.log(z.clamp(1e-7, 1 - 1e-7))  # noqa: E731
    return lambda: float(torch.nn.functional.nll_loss(log_z(), to_long(y)))


def _torch_dense(data: Data):
    import torch

    z = _torch_tensor(data.scores)
    t = _torch_tensor(data.onehot)
    if data.case.inputs != "logits":
        return None
    return lambda: float(torch.nn.functional.cross_entropy(z, t))


def _jax_precision(case: Case):
    """The context JAX runs a case in: without it JAX truncates float64 arrays to float32
    (``jax_enable_x64`` is off by default), so a float64 case would time a float32 loss."""
    import contextlib

    import jax

    return jax.enable_x64(True) if case.dtype == "float64" else contextlib.nullcontext()


def _in_precision(case: Case, fn: Callable[[], float]) -> Callable[[], float]:
    """``fn`` called in the case's JAX precision (a few microseconds per call)."""

    def call():
        with _jax_precision(case):
            return fn()

    return call


def _jax_sparse(data: Data):
    import jax
    import jax.numpy as jnp

    if data.case.inputs != "logits":
        return None

    @jax.jit
    def f(z, y):
        logp = jax.nn.log_softmax(z, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    with _jax_precision(data.case):
        z = _jax_array(data.scores)
        y = jnp.asarray(data.labels.astype(np.int32))
    return _in_precision(data.case, lambda: float(f(z, y).block_until_ready()))


def _jax_dense(data: Data):
    import jax
    import jax.numpy as jnp

    if data.case.inputs != "logits":
        return None

    @jax.jit
    def f(z, t):
        return -jnp.mean(jnp.sum(t * jax.nn.log_softmax(z, axis=-1), axis=-1))

    with _jax_precision(data.case):
        z, t = _jax_array(data.scores), _jax_array(data.onehot)
    return _in_precision(data.case, lambda: float(f(z, t).block_until_ready()))


def _keras(data: Data, sparse: bool):
    import keras  # backend from KERAS_BACKEND (jax or torch; TensorFlow is the default)

    if data.case.dtype == "bfloat16":
        return None  # Keras takes bfloat16 only as its backend's tensors

    # Keras computes a loss in its float type (float32 by default) unless told the case's
    losses = keras.losses
    kind = losses.SparseCategoricalCrossentropy if sparse else losses.CategoricalCrossentropy
    loss = kind(from_logits=data.case.inputs == "logits", dtype=data.case.dtype)
    target = data.labels if sparse else data.onehot
    call = lambda: float(np.asarray(loss(target, data.scores)))  # noqa: E731
    return _in_precision(data.case, call) if keras.backend.backend() == "jax" else call


def _exp_floor(data: Data):
    from xent._engine import exp_floor

    return exp_floor(data.scores)


def _rowsum_baseline(data: Data, targets: bool = False):
    from xent._engine import row_sums

    x = data.onehot if targets else data.scores
    out = np.empty(data.case.rows)
    return lambda: float(row_sums(x, out)[0]) if data.case.rows else 0.0


# ---------------------------------------------------------------- forward + backward
def label_grad_sum(data: Data, grad) -> float:
    """``sum_i g[i, y_i]`` of a mean loss's gradient (``= mean_i p_{i y_i} - 1``): what the
    runner checks of a gradient, computed outside the timing."""
    if hasattr(grad, "detach"):  # a torch tensor (bfloat16 widened by torch)
        grad = grad.detach().float().numpy()
    g = np.asarray(grad)
    g = widened(g) if g.dtype == BFLOAT16 else g
    g = g.astype(np.float32) if g.dtype.kind == "V" else g  # ml_dtypes.bfloat16 (JAX)
    return float(np.sum(g[np.arange(data.case.rows), data.labels], dtype=np.float64))


def _grad_of(data: Data, out) -> float:
    return label_grad_sum(data, out[1])


def _xent_grad(data: Data, sparse: bool):
    target = data.labels if sparse else data.onehot
    return lambda: xent.value_and_grad(data.scores, target)


def _xent_torch_grad(data: Data, sparse: bool):
    """xent through PyTorch autograd: ``xent.cross_entropy(z).backward()``."""
    import torch

    z = _torch_tensor(data.scores).requires_grad_(True)
    target = torch.from_numpy(data.labels) if sparse else _torch_tensor(data.onehot)

    def step():
        z.grad = None
        loss = xent.cross_entropy(z, target)
        loss.backward()
        return loss, z.grad

    return step


def _torch_grad(data: Data, sparse: bool, compiled: bool = False):
    import torch

    z = _torch_tensor(data.scores).requires_grad_(True)
    target = torch.from_numpy(data.labels) if sparse else _torch_tensor(data.onehot)
    f = torch.nn.functional.cross_entropy
    if compiled:
        try:
            f = torch.compile(f)
            f(z, target).backward()  # compiles now; a machine without a compiler fails here
        except Exception:
            return None

    def step():
        z.grad = None
        loss = f(z, target)
        loss.backward()
        return loss, z.grad

    return step


def _jax_grad(data: Data, sparse: bool):
    import jax
    import jax.numpy as jnp

    def loss(z, t):
        # 16-bit logits computed in float32 (as xent does); float32 and float64 as they are
        wide = z if z.dtype in (jnp.float32, jnp.float64) else z.astype(jnp.float32)
        logp = jax.nn.log_softmax(wide, axis=-1)
        if sparse:
            return -jnp.mean(jnp.take_along_axis(logp, t[:, None], axis=1))
        return -jnp.mean(jnp.sum(t * logp, axis=-1))

    f = jax.jit(jax.value_and_grad(loss))
    with _jax_precision(data.case):
        z = _jax_array(data.scores)
        if sparse:
            t = jnp.asarray(data.labels.astype(np.int32))
        else:
            t = _jax_array(data.onehot)
    return _in_precision(data.case, lambda: jax.block_until_ready(f(z, t)))


def _rw_baseline(data: Data):
    from xent._engine import row_scale

    out = np.empty_like(data.scores)
    return lambda: (row_scale(data.scores, out), 0.0)[1]


def _grad_impls() -> list[Impl]:
    out = [
        Impl("read-write baseline", BASELINE, _rw_baseline, task="grad",
             bytes_read=lambda d: 2 * d.scores.nbytes),
    ]  # fmt: skip
    for sparse, kind, name in ((True, "sparse", "sparse"), (False, "dense", "categorical")):
        out += [
            Impl(f"xent {name} fwd+bwd", kind, lambda d, s=sparse: _xent_grad(d, s),
                 task="grad", summary=_grad_of),
            Impl(f"xent {name} fwd+bwd (torch autograd)", kind,
                 lambda d, s=sparse: _xent_torch_grad(d, s), requires="torch", task="grad",
                 summary=_grad_of),
            Impl(f"torch {kind} fwd+bwd", kind, lambda d, s=sparse: _torch_grad(d, s),
                 requires="torch", task="grad", summary=_grad_of),
            Impl(f"torch.compile {kind} fwd+bwd", kind,
                 lambda d, s=sparse: _torch_grad(d, s, compiled=True), requires="torch",
                 task="grad", summary=_grad_of, slow_to_make=True),
            Impl(f"jax {kind} fwd+bwd", kind, lambda d, s=sparse: _jax_grad(d, s),
                 requires="jax", task="grad", summary=_grad_of),
        ]  # fmt: skip
    return out


REGISTRY: list[Impl] = [
    Impl("row-sum baseline", BASELINE, _rowsum_baseline, bytes_read=lambda d: d.scores.nbytes),
    Impl(
        "targets' row sum",
        TARGETS_BASELINE,
        lambda d: _rowsum_baseline(d, targets=True),
        bytes_read=lambda d: d.onehot.nbytes,
    ),
    Impl("exp floor", FLOOR, _exp_floor, bytes_read=lambda d: 0, task=None),
    Impl("xent sparse", "sparse", _xent_sparse),
    Impl("xent categorical", "dense", _xent_dense),
    Impl("xent sparse gather", "sparse", _xent_gather, bytes_read=_gather_bytes),
    Impl(
        "xent sparse float32",
        "sparse",
        lambda d: _xent_float32(d, True),
        bytes_read=_float32_bytes(True),
    ),
    Impl(
        "xent categorical float32",
        "dense",
        lambda d: _xent_float32(d, False),
        bytes_read=_float32_bytes(False),
        target_bytes_read=lambda d: 2 * d.onehot.nbytes,
    ),
    Impl("numpy sparse", "sparse", _numpy_sparse),
    Impl("torch sparse", "sparse", _torch_sparse, requires="torch"),
    Impl("torch dense", "dense", _torch_dense, requires="torch"),
    Impl("jax sparse", "sparse", _jax_sparse, requires="jax"),
    Impl("jax dense", "dense", _jax_dense, requires="jax"),
    Impl("keras sparse", "sparse", lambda d: _keras(d, True), requires="keras"),
    Impl("keras dense", "dense", lambda d: _keras(d, False), requires="keras"),
    *_grad_impls(),
]


def expected_mean(data: Data) -> float:
    """Float64 NumPy evaluation of the mean loss (one-hot targets: sparse == dense); for a
    gradient case, of the checked gradient value ``mean_i p_{i y_i} - 1``."""
    z = widened(data.scores).astype(np.float64)
    if data.case.task == "grad":
        idx = np.arange(data.case.rows)
        m = z.max(axis=1)
        lse = np.log(np.exp(z - m[:, None]).sum(axis=1)) + m
        return float(np.mean(np.exp(z[idx, data.labels] - lse)) - 1.0)
    return numpy_mean_loss(z, data.labels, data.case.inputs)


def tolerance(impl: Impl, case: Case) -> float:
    """Relative tolerance of a result: PyTorch, JAX and NumPy return a 16-bit input's loss in
    16 bits (bfloat16's grid near 7 is 1/32); xent returns float32.  A float64 case is held
    to 1e-9, which a loss computed in float32 misses (so a peer truncating float64 is seen)."""
    if case.dtype in HALF_DTYPES and (case.task == "grad" or not impl.name.startswith("xent")):
        return 2e-2  # and every 16-bit gradient is rounded to 16 bits
    if case.dtype == "float64":
        return 1e-9  # a float32 computation of a float64 case is typically 1e-8 off
    return 1e-4


# ---------------------------------------------------------------- runner
QUICK = [
    Case(200_000, 10),
    Case(20_000, 1_000),
    Case(512, 32_000),
    Case(20_000, 1_000, inputs="probs"),
    Case(20_000, 1_000, "bfloat16"),
    Case(20_000, 1_000, task="grad"),
]
_LOGITS_SHAPES = [
    Case(1_000_000, 10),
    Case(100_000, 1_000),
    Case(8_192, 32_000),
    Case(1_024, 131_072),
]
#: Forward + backward: the issue's two shapes, the short and the long rows, and bfloat16.
GRAD_CASES = [
    *(dataclasses.replace(c, task="grad") for c in _LOGITS_SHAPES),
    Case(8_192, 32_000, "bfloat16", task="grad"),
]
DEFAULT = [
    *_LOGITS_SHAPES,
    Case(1_000_000, 10, labels="uint8"),  # fashion-mnist's shape and label dtype
    Case(100_000, 1_000, inputs="probs"),
    Case(1_000_000, 10, inputs="probs"),  # a softmax layer's output, many short rows
    *(dataclasses.replace(c, dtype="bfloat16") for c in _LOGITS_SHAPES),
    Case(100_000, 1_000, "float16"),
    *GRAD_CASES,
]
FULL = (
    DEFAULT
    + [dataclasses.replace(c, dtype="float64") for c in DEFAULT if c.dtype == "float32"]
    + [dataclasses.replace(c, dtype="float16") for c in _LOGITS_SHAPES if c.classes != 1_000]
    + [Case(100_000, 1_000, "bfloat16", "probs")]
    + [Case(100_000, 1_000, "float64", task="grad")]
)


#: Pause before each timed call of :func:`time_interleaved` (not timed).
SETTLE_S = 0.05


def time_interleaved(
    fns: list[Callable[[], float]],
    repeat: int,
    budget_s: float,
    seed: int = 0,
    settle_s: float = SETTLE_S,
) -> list[tuple[list[float], float]]:
    """``(seconds of each timed call, last value)`` of every function in ``fns``: one warm-up
    call each, then up to ``repeat`` rounds that call each function once, in an order
    shuffled every round, each call after a pause of ``settle_s``; fewer rounds (at least 3)
    once ``budget_s`` per function is spent.

    Why rounds: on a shared machine the speed of the same call can move by 1.5x from one
    second to the next (another tenant on the core); timed one implementation after another,
    such a phase falls on some of them and the ratios between them measure the phase.  In
    rounds every implementation samples the same phases, and between two calls of one
    function the others run, as between two steps of a real program.  The pause: a
    framework's work can go on after its call returned (right after a Keras loss on
    100,000 x 1,000 a row sum took 29-40 ms, 25 ms from 30 ms later on), and would be
    charged to whichever call came next.
    """
    values = [fn() for fn in fns]
    times: list[list[float]] = [[] for _ in fns]
    order = np.random.default_rng(seed)
    start = time.perf_counter()
    for done in range(1, repeat + 1):
        for k in order.permutation(len(fns)):
            time.sleep(settle_s)
            t0 = time.perf_counter()
            values[k] = fns[k]()
            times[k].append(time.perf_counter() - t0)
        spent = time.perf_counter() - start - settle_s * done * len(fns)
        if spent > budget_s * len(fns) and done >= 3:
            break
    return list(zip(times, values))


#: The percentiles of every timing a report keeps (``p50`` is the median quoted everywhere).
PERCENTILES = (20, 50, 80)


def percentiles(times: list[float]) -> dict:
    """``{"p20": ..., "p50": ..., "p80": ...}`` of ``times`` in milliseconds."""
    ms = np.asarray(times) * 1e3
    return {f"p{q}": float(np.percentile(ms, q)) for q in PERCENTILES}


def peak_extra_mib(fn: Callable[[], float]) -> float:
    """Peak memory NumPy allocates during one call (``tracemalloc``; inputs already exist).

    Counts what the call allocates beyond its inputs: outputs, label copies, temporaries.
    Allocations made outside NumPy (PyTorch, JAX) are not seen; those rows show ``None``.
    """
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


_STARTUP_CODE = """
import time
t0 = time.perf_counter()
import numpy as np, xent
t1 = time.perf_counter()
z = np.random.default_rng(0).standard_normal((1000, 100)).astype(np.float32)
y = np.arange(1000) % 100
xent.sparse_categorical_crossentropy(y, z, from_logits=True)
t2 = time.perf_counter()
xent.categorical_crossentropy(np.eye(100, dtype=np.float32)[y], z, from_logits=True)
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2)
"""


def startup_times() -> dict:
    """Import and first-call seconds of two fresh processes sharing an empty kernel cache:
    the first compiles (cold), the second loads what the first cached."""
    import os
    import subprocess
    import tempfile

    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for name in ("cold", "cached"):
            run = subprocess.run(
                [sys.executable, "-c", _STARTUP_CODE],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
            if run.returncode != 0:
                out[name] = {"error": run.stderr.strip().splitlines()[-1:]}
                continue
            imp, sparse, dense = (float(v) for v in run.stdout.split())
            out[name] = {
                "import_s": imp,
                "first_sparse_call_s": sparse,
                "first_dense_call_s": dense,
            }
    return out


def run(
    cases, repeat: int = 7, budget_s: float = 2.0, progress=None, startup=True, slow=True
) -> dict:
    """Time every available implementation on every case; returns a JSON-ready dict.
    ``slow=False`` leaves out implementations that take long to compile (torch.compile)."""
    import numba

    from xent._engine import ready

    ready()
    impls = [i for i in REGISTRY if i.available() and (slow or not i.slow_to_make)]
    results = []
    for k, case in enumerate(cases):
        data = Data.make(case)
        want = expected_mean(data)
        made = []
        for impl in impls:
            if not impl.runs_on(case):
                continue
            fn = impl.make(data)
            if fn is not None:
                made.append((impl, fn))
        if progress:
            names = ", ".join(impl.name for impl, _ in made)
            progress(f"[{k + 1}/{len(cases)}] {case.label}: {names}")
        timed = time_interleaved([fn for _, fn in made], repeat, budget_s, seed=k)
        rows = []
        for (impl, fn), (times, value) in zip(made, timed):
            seconds = float(np.median(times))
            value = impl.checked(data, value)
            rtol = tolerance(impl, case)
            limit = impl.loss in LIMITS
            ok = limit or bool(np.isclose(value, want, rtol=rtol, atol=1e-5))
            nbytes = impl.nbytes(data)
            traced = impl.requires is None  # tracemalloc sees NumPy's allocations only
            rows.append(
                dict(
                    impl=impl.name,
                    loss=impl.loss,
                    ms=seconds * 1e3,
                    ms_percentiles=percentiles(times),
                    samples=len(times),
                    bytes=nbytes,
                    target_bytes=impl.target_bytes(data) if impl.task != "grad" else 0,
                    gbps=nbytes / seconds / 1e9,
                    value=value,
                    correct=ok,
                    peak_extra_mib=peak_extra_mib(fn) if traced and not limit else None,
                )
            )
        add_limits(rows, case)
        results.append(
            dict(case=dataclasses.asdict(case), label=case.label, expected=want, results=rows)
        )
    if progress and startup:
        progress("compile and first-call times in fresh processes")
    return dict(
        machine=machine_info(),
        threads=numba.get_num_threads(),
        threading_layer=_threading_layer(),
        results=results,
        startup=startup_times() if startup else None,
    )


def add_limits(rows: list[dict], case: Case) -> None:
    """Put each result against the two limits measured in the same run (see README,
    "Benchmarks"): ``pct_of_baseline``, the memory baseline's time for the bytes it must move
    over its own time (row sum, or read-write for a gradient; a dense call's targets at the
    speed of the row sum over the targets, a second allocation); ``pct_of_exp_floor``,
    the exp floor's time over its own (logits only: one ``exp`` per element is the least a
    loss of logits computes); ``limit``, the binding one (the larger time), and
    ``pct_of_limit``, the fraction of it reached (100% = at the limit)."""
    base = next(r for r in rows if r["loss"] == BASELINE)
    targets = next((r for r in rows if r["loss"] == TARGETS_BASELINE), base)
    floor = next((r for r in rows if r["loss"] == FLOOR), None)
    for r in rows:
        tb = r.get("target_bytes", 0)
        memory_ms = base["ms"] * (r["bytes"] - tb) / base["bytes"] if r["bytes"] else 0.0
        memory_ms += targets["ms"] * tb / targets["bytes"] if tb else 0.0
        r["pct_of_baseline"] = 100.0 * memory_ms / r["ms"] if r["bytes"] else None
        exp_ms = floor["ms"] if floor is not None and case.inputs == "logits" else 0.0
        r["pct_of_exp_floor"] = 100.0 * exp_ms / r["ms"] if exp_ms else None
        if r["loss"] in LIMITS:
            r["limit"], r["pct_of_limit"] = None, None
            continue
        r["limit"] = "exp" if exp_ms > memory_ms else "memory"
        r["pct_of_limit"] = 100.0 * max(exp_ms, memory_ms) / r["ms"]


def provider(impl_name: str) -> str:
    """Who implements a registry entry: its name's first word (xent, torch, jax, ...)."""
    return impl_name.split()[0]


CSV_FIELDS = (
    "kernel", "provider", "implementation", "rows", "classes", "dtype", "inputs", "task",
    "metric", "unit", "p20", "p50", "p80", "samples", "cpu", "threads",
)  # fmt: skip


def csv_rows(report: dict) -> list[dict]:
    """One row per (kernel, provider, shape, dtype, metric) with p20/p50/p80: time in ms,
    throughput in GB/s of the bytes the call must move, and the percentage of each limit
    (from the result's own percentiles over the limits' medians)."""
    out = []
    cpu = report["machine"]["cpu"]
    for entry in report["results"]:
        case = entry["case"]
        for r in entry["results"]:
            pct = r["ms_percentiles"]
            kernel = {
                BASELINE: "memory limit",
                TARGETS_BASELINE: "memory limit (targets)",
                FLOOR: "exp limit",
            }.get(r["loss"], r["loss"])
            common = dict(
                kernel=kernel + (" fwd+bwd" if case["task"] == "grad" else ""),
                provider="limit" if r["loss"] in LIMITS else provider(r["impl"]),
                implementation=r["impl"],
                rows=case["rows"],
                classes=case["classes"],
                dtype=case["dtype"],
                inputs=case["inputs"],
                task=case["task"],
                samples=r["samples"],
                cpu=cpu,
                threads=report["threads"],
            )

            def add(metric, unit, f, common=common, pct=pct):
                # p20 of a rate comes from the p80 time (slower call, lower rate) and so on
                lo, mid, hi = f(pct["p20"]), f(pct["p50"]), f(pct["p80"])
                if f(1.0) > f(2.0):  # decreasing in time
                    lo, hi = hi, lo
                out.append(dict(common, metric=metric, unit=unit, p20=lo, p50=mid, p80=hi))

            add("time", "ms", lambda ms: ms)
            if r["bytes"]:
                add("throughput", "GB/s", lambda ms, b=r["bytes"]: b / ms / 1e6)
            if r.get("pct_of_baseline") is not None and r["loss"] not in LIMITS:
                add("pct_of_memory_limit", "%", lambda ms, p=r: p["pct_of_baseline"] * p["ms"] / ms)
            if r.get("pct_of_exp_floor") is not None and r["loss"] not in LIMITS:
                add("pct_of_exp_limit", "%", lambda ms, p=r: p["pct_of_exp_floor"] * p["ms"] / ms)
    return out


def write_csv(report: dict, path: str) -> None:
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(report))


def main(args) -> int:
    cases = QUICK if args.quick else FULL if args.full else DEFAULT
    if args.plot:  # say so before minutes of timing, not after
        from xent._eval_plot import require_matplotlib

        try:
            require_matplotlib("xent bench")
        except ImportError as exc:
            print(exc, file=sys.stderr)
            return 2

    def progress(msg):
        if not args.json:
            print(f"\r\033[K{msg}", end="", file=sys.stderr, flush=True)

    report = run(
        cases, repeat=args.repeat, budget_s=args.budget, progress=progress, slow=not args.quick
    )
    if not args.json:
        print("\r\033[K", end="", file=sys.stderr)
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(report, fh, indent=1)
    if getattr(args, "csv", None):
        write_csv(report, args.csv)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(format_table(report))
    if args.plot:
        plot(report, args.plot)
    bad = [
        (e["label"], r["impl"], r["value"])
        for e in report["results"]
        for r in e["results"]
        if not r["correct"]
    ]
    peers_bad = [b for b in bad if not b[1].startswith("xent")]
    if peers_bad:  # information about the peers (e.g. PyTorch's float16 mean overflows)
        print(f"note: peers' results off the float64 value: {peers_bad}", file=sys.stderr)
    ours_bad = [b for b in bad if b[1].startswith("xent")]
    if ours_bad:
        print(f"incorrect results: {ours_bad}", file=sys.stderr)
        return 1
    return 0
