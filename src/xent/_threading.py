"""Threading policy: a Numba threading layer that is safe for concurrent calls and for
``fork``, found wherever pip installed it, and the thread count.

Numba's ``workqueue`` layer aborts the whole process when two Python threads launch parallel
kernels at once, and GNU OpenMP kills a ``fork``-ed child at its first parallel launch once the
parent's threads have started ("Terminating: fork() called from a process already using GNU
OpenMP"), which leaves a ``multiprocessing.Pool`` waiting forever.  So:

* **TBB, found where pip put it.**  The ``tbb`` wheel (a dependency on x86-64) installs
  ``libtbb.so.12`` into ``<prefix>/lib`` (a venv's ``lib/``, ``~/.local/lib`` for ``--user``,
  the interpreter's ``lib/`` system-wide), a folder the dynamic loader does not search, so
  Numba's TBB layer failed to load on a fresh install.  At import, xent loads that file by its
  full path, found through the files that ``importlib.metadata`` lists for the ``tbb``
  distribution; Numba's TBB extension then links against the copy already in the process.
* **Layer choice.**  xent asks Numba for ``"safe"`` (TBB: safe for concurrent calls and for
  ``fork``), falls back to ``"threadsafe"`` (TBB or OpenMP), and raises a ``RuntimeError``
  rather than ever running on ``workqueue``.  A layer the user chose
  (``NUMBA_THREADING_LAYER`` or ``numba.config.THREADING_LAYER``) is respected unless it is
  ``workqueue``.
* **Never hang after fork.**  A child forked from a process whose OpenMP threads had started
  runs xent's kernels on one thread, through serial builds of the same kernels (compiled on
  first use in such a child and cached like the others), and gets the same numbers.

The layer is loaded once, before the first kernel launch of the process.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

import numba

from xent._numbers import check_number

_lock = threading.Lock()
_ready = False

#: The TBB runtime file Numba's TBB layer links against, per platform.
_TBB_LIBRARY = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}

#: What :func:`_load_tbb` did: the path it loaded, or why it loaded nothing (for messages).
tbb_status = "not looked for"

_HELP = (
    "xent needs a Numba threading layer that is safe for concurrent calls (TBB, or OpenMP); "
    "only 'workqueue' is available here, which aborts the process when two threads call a "
    "parallel kernel at once. Install TBB with `pip install tbb` (or choose the layer with "
    "NUMBA_THREADING_LAYER=tbb / omp)."
)


def _load_tbb() -> str:
    """Load the TBB runtime that the installed ``tbb`` distribution ships, by full path.

    Returns what happened, for :data:`tbb_status`.  Never raises: without TBB, xent runs on
    OpenMP (and a forked child on one thread).
    """
    import importlib.metadata

    name = _TBB_LIBRARY.get(sys.platform)
    if name is None:
        return f"no TBB runtime name known for platform {sys.platform!r}"
    try:
        dist = importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return "the tbb distribution is not installed"
    candidates = [dist.locate_file(f) for f in (dist.files or ()) if f.name == name]
    present = [os.path.realpath(str(p)) for p in candidates if os.path.isfile(str(p))]
    if not present:
        # e.g. `pip install --target DIR`, which drops a wheel's data files (its lib/ folder)
        return f"tbb {dist.version} is installed but its {name} is not on disk"
    path = present[0]
    try:
        if sys.platform == "win32":
            os.add_dll_directory(os.path.dirname(path))
            ctypes.CDLL(path)
        else:
            # RTLD_GLOBAL: Numba's tbbpool extension, loaded later, resolves its libtbb
            # dependency (by soname) to this copy
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        return f"{path} could not be loaded: {exc}"
    return f"loaded {path}"


def _wants_tbb() -> bool:
    chosen = os.environ.get("NUMBA_THREADING_LAYER", numba.config.THREADING_LAYER)
    return chosen in ("default", "safe", "threadsafe", "tbb")


if _wants_tbb():
    tbb_status = _load_tbb()

# A child forked from a process whose OpenMP threads have started: parallel launches would
# kill it (GNU OpenMP is not fork-safe), so its kernels run serially.  Set in the child by
# the fork hook below; inherited by its own children.
_forked_from_openmp = False


def _after_fork_in_child() -> None:
    global _forked_from_openmp
    try:
        layer = numba.threading_layer()
    except ValueError:  # no layer loaded before the fork: the child starts its own threads
        return
    if layer == "omp":
        _forked_from_openmp = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def serial_only() -> bool:
    """True in a process forked from one whose OpenMP threads had started: run serial kernels."""
    return _forked_from_openmp


def ensure_threading_layer(probe) -> str:
    """Select and load a safe threading layer once; return its name (``tbb`` or ``omp``).

    ``probe()`` launches a tiny parallel kernel, which makes Numba load its layer (the
    engine passes one: this module knows no kernel).
    """
    global _ready
    if _ready or _forked_from_openmp:
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
                probe()
                layer = numba.threading_layer()
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
    check_number(n, "n", integral=True)
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

    Notes
    -----
    1 in a process forked from one whose OpenMP threads had started: such a child runs the
    kernels serially (see README, "Threads, processes and bad input").
    """
    return 1 if _forked_from_openmp else numba.get_num_threads()


def max_threads() -> int:
    """``NUMBA_NUM_THREADS``: the largest thread count :func:`set_num_threads` accepts.

    Examples
    --------
    >>> import xent
    >>> xent.max_threads() >= 1
    True
    """
    return numba.config.NUMBA_NUM_THREADS
