"""Threading policy: a Numba threading layer that is safe for concurrent calls, and the
thread count.

Numba's ``workqueue`` layer aborts the whole process when two Python threads launch parallel
kernels at once, and GNU OpenMP hangs a ``fork``-ed child once its threads have started.
xent therefore asks Numba for its ``"safe"`` layer (TBB: safe for concurrent calls and for
``fork``; ``tbb`` is a dependency on the platforms where PyPI has it), falls back to
``"threadsafe"`` (TBB or OpenMP: concurrent calls are safe, ``fork`` after use is not), and
raises a ``RuntimeError`` explaining what to install rather than ever running on
``workqueue``.  A layer the user chose (``NUMBA_THREADING_LAYER`` or
``numba.config.THREADING_LAYER``) is respected unless it is ``workqueue``.

The check runs once, before the first kernel launch of the process.
"""

from __future__ import annotations

import os
import threading

import numba
import numpy as np

_lock = threading.Lock()
_ready = False

_HELP = (
    "xent needs a Numba threading layer that is safe for concurrent calls (TBB, or OpenMP); "
    "only 'workqueue' is available here, which aborts the process when two threads call a "
    "parallel kernel at once. Install TBB with `pip install tbb` (or choose the layer with "
    "NUMBA_THREADING_LAYER=tbb / omp)."
)


def _launch_layer() -> str:
    """Run a tiny parallel kernel so Numba loads its layer; return the layer's name."""
    from xent.kernels.baseline import row_sums

    row_sums(np.zeros((2, 2)), np.empty(2))
    return numba.threading_layer()


def ensure_threading_layer() -> str:
    """Select and load a safe threading layer once; return its name (``tbb`` or ``omp``)."""
    global _ready
    if _ready:
        return numba.threading_layer()
    with _lock:
        if _ready:
            return numba.threading_layer()
        chosen = numba.config.THREADING_LAYER
        user_chose = "NUMBA_THREADING_LAYER" in os.environ or chosen != "default"
        if user_chose and chosen == "workqueue":
            raise RuntimeError(
                "NUMBA_THREADING_LAYER selects 'workqueue', which aborts the process when two "
                "threads call a parallel kernel at once; xent refuses it. Use tbb "
                "(`pip install tbb`) or omp."
            )
        candidates = [chosen] if user_chose else ["safe", "threadsafe"]
        layer = None
        errors = []
        for candidate in candidates:
            numba.config.THREADING_LAYER = candidate
            try:
                layer = _launch_layer()
                break
            except ValueError as exc:  # Numba: "No threading layer could be loaded"
                errors.append(f"{candidate}: {exc}")
        if layer is None:
            raise RuntimeError(_HELP + " Numba said: " + "; ".join(errors))
        if layer == "workqueue":  # a layer fixed before xent was imported
            raise RuntimeError(_HELP + " (the process already runs on 'workqueue')")
        _ready = True
        return layer


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for xent's kernels launched from the calling thread.

    Parameters
    ----------
    n : int
        Between 1 and ``NUMBA_NUM_THREADS`` (the number of threads Numba started, by default
        the number of cores; set that environment variable before the first import to
        change the maximum).

    Notes
    -----
    As in Numba, the setting belongs to the calling Python thread.  Results do not depend on
    it: every reduction runs in a fixed order (tested bit for bit for 1, 2 and all threads).

    Examples
    --------
    >>> import xent
    >>> xent.set_num_threads(1)
    >>> xent.get_num_threads()
    1
    >>> xent.set_num_threads(xent.max_threads())
    """
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n must be an integer, got {n!r}")
    top = max_threads()
    if not 1 <= n <= top:
        raise ValueError(f"n must be between 1 and {top} (NUMBA_NUM_THREADS), got {n}")
    numba.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads xent's kernels use when launched from the calling thread.

    Examples
    --------
    >>> import xent
    >>> 1 <= xent.get_num_threads() <= xent.max_threads()
    True
    """
    return numba.get_num_threads()


def max_threads() -> int:
    """``NUMBA_NUM_THREADS``: the largest thread count :func:`set_num_threads` accepts.

    Examples
    --------
    >>> import xent
    >>> xent.max_threads() >= 1
    True
    """
    return numba.config.NUMBA_NUM_THREADS


def threading_layer() -> str:
    """The Numba threading layer xent runs on (``"tbb"`` or ``"omp"``), loading it if needed.

    Examples
    --------
    >>> import xent
    >>> xent.threading_layer() in ("tbb", "omp")
    True
    """
    return ensure_threading_layer()
