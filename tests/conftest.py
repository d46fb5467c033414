import os
import sys

import numpy as np
import pytest
from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # for ``import reference``

# CI runs more examples than a developer's quick run; both derandomised for reproducibility.
settings.register_profile("ci", max_examples=150, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without xdist
def pytest_xdist_auto_num_workers(config):
    """``pytest -n auto``: a worker per core this process may run on, at most 4.  Most of the
    suite's time is single-threaded Numba compilation, which workers share out; each also
    compiles what it runs and imports the frameworks (about 1.3 GB), so more than 4 cost
    more than they save."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, cores or 1))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
