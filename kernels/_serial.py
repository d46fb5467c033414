"""Serial builds of the parallel kernels, for processes where parallel launches are unsafe.

A child ``fork``-ed from a process whose GNU OpenMP threads had started is killed at its first
parallel launch.  There the engine runs :func:`serial` builds instead: the same Python
function compiled without ``parallel`` (``prange`` becomes ``range``), so every row is computed
by the same code and gives the same numbers.  A build is compiled on first use and cached on
disk under its own name (``<kernel>_serial``), apart from the parallel build's cache entries.
"""

import threading
import types

from numba import njit

from ._config import PARALLEL

SERIAL = {k: v for k, v in PARALLEL.items() if k != "parallel"}

_builds = {}
_lock = threading.Lock()


def serial(kernel):
    """The serial build of the parallel ``kernel`` (a Numba dispatcher), made once."""
    with _lock:
        build = _builds.get(kernel)
        if build is None:
            f = kernel.py_func
            twin = types.FunctionType(
                f.__code__, f.__globals__, f.__name__ + "_serial", f.__defaults__, f.__closure__
            )
            # its own qualified name gives it its own cache index
            twin.__qualname__ = f.__qualname__ + "_serial"
            twin.__module__ = f.__module__
            twin.__doc__ = f.__doc__
            build = _builds[kernel] = njit(**SERIAL)(twin)
        return build
