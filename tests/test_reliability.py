"""Concurrency, caching and the threading layer (pools of processes: ``test_processes.py``).

Anything that could crash the interpreter runs in a subprocess, so a segfault or abort is a
failed test with its output, not a dead pytest.
"""

import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import xent

from helpers import thread_counts
from subproc import kill_group, run_python

TIMEOUT = 600


def _calls(seed):
    """One call of every public loss on inputs that depend on ``seed``."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2000, 97)).astype(np.float32)
    p = np.abs(z) + np.float32(0.01)
    y = rng.integers(0, 97, 2000)
    t = np.eye(97, dtype=np.float32)[y]
    return [
        xent.sparse_categorical_crossentropy(y, z, from_logits=True),
        xent.categorical_crossentropy(t, z, from_logits=True, label_smoothing=0.1),
        xent.sparse_categorical_crossentropy(y, p, label_smoothing=0.2),
        xent.categorical_crossentropy(t, p),
        xent.SparseCategoricalCrossentropy(from_logits=True)(y, z),
        xent.CategoricalCrossentropy()(t, p, sample_weight=np.linspace(0, 1, 2000)),
    ]


def test_threading_layer_is_safe():
    assert xent.threading_layer() in ("tbb", "omp")


def test_eight_threads_calling_every_loss_concurrently():
    serial = {seed: _calls(seed) for seed in range(8)}
    barrier = threading.Barrier(8)

    def work(seed):
        barrier.wait()  # start together
        return [_calls(seed) for _ in range(3)]

    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(range(8), pool.map(work, range(8))))
    for seed, repeats in results.items():
        for got in repeats:
            for a, b in zip(got, serial[seed]):
                np.testing.assert_array_equal(a, b)


def test_workqueue_is_refused_not_aborting():
    run = run_python(
        """
        import xent
        try:
            xent.sparse_categorical_crossentropy([1], [[0.2, 0.8]])
        except RuntimeError as exc:
            print("refused:", exc)
    """,
        env={"NUMBA_THREADING_LAYER": "workqueue"},
    )
    assert run.returncode == 0, run.stderr
    assert "refused:" in run.stdout and "workqueue" in run.stdout


@pytest.mark.slow
def test_compiled_kernel_cache_shared_by_concurrent_processes(tmp_path):
    """Several processes compile into, then load from, one empty cache at the same time
    (numba#4807 reported segfaults in such a race)."""
    code = textwrap.dedent("""
        import numpy as np, xent
        rng = np.random.default_rng(0)
        z = rng.standard_normal((500, 40)); y = rng.integers(0, 40, 500)
        print(repr(float(xent.SparseCategoricalCrossentropy(from_logits=True)(y, z))))
        print(repr(float(xent.CategoricalCrossentropy()(np.eye(40)[y], np.abs(z)))))
    """)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    outputs = []
    for _round in ("compile", "load"):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
            for _ in range(4)
        ]
        try:
            for p in procs:
                out, err = p.communicate(timeout=TIMEOUT)
                assert p.returncode == 0, err
                outputs.append(out)
        finally:
            for p in procs:  # on a timeout or failure, nothing is left running
                kill_group(p.pid)
    assert len(set(outputs)) == 1, outputs
    assert any((tmp_path / "cache").rglob("*.nbi"))


@pytest.fixture
def restore_threads():
    n = numba.get_num_threads()
    yield
    numba.set_num_threads(n)


def test_set_num_threads_results_bit_identical(restore_threads):
    counts = thread_counts()
    results = []
    for n in counts:
        xent.set_num_threads(n)
        assert xent.get_num_threads() == n
        results.append(_calls(11))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_set_num_threads_validates(restore_threads):
    with pytest.raises(ValueError, match="n must be between 1 and"):
        xent.set_num_threads(0)
    with pytest.raises(ValueError, match="n must be between 1 and"):
        xent.set_num_threads(xent.max_threads() + 1)
    with pytest.raises(TypeError, match="n must be an integer"):
        xent.set_num_threads(1.5)


def test_numba_num_threads_is_respected():
    run = run_python(
        "import xent; print(xent.max_threads(), xent.get_num_threads())",
        env={"NUMBA_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "1"]
