"""Processes: the threading layer a fresh install selects, and pools after kernels ran.

GNU OpenMP kills a forked child at its first parallel launch once the parent's threads have
started, and a pool then waits forever for that child's work.  Each case runs in its own
process group with a timeout that kills the whole group (``subproc.run_isolated``), under
each layer: the default (TBB where the wheel exists) and OpenMP forced.
"""

import importlib.metadata
import multiprocessing
import platform
import sys
import textwrap

import pytest

from subproc import run_isolated, run_python

pytestmark = pytest.mark.slow

LINUX_X86_64 = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def _tbb_wheel_installed() -> bool:
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


#: TBB must be what a fresh install runs on where PyPI has the tbb wheel.
EXPECT_TBB = LINUX_X86_64 and _tbb_wheel_installed()

#: The layers to run each process case under: Numba's choice, and OpenMP forced.
LAYERS = {"default": {"NUMBA_THREADING_LAYER": None}, "omp": {"NUMBA_THREADING_LAYER": "omp"}}

#: Every kernel family once: short and per-row logits (sparse, dense), a few long rows,
#: probabilities (sparse, dense), the probability checks of log_loss, and evaluation.
WORK = """
    import json
    import numpy as np
    import xent

    def work(seed):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((3000, 50)).astype(np.float32)
        y = rng.integers(0, 50, 3000)
        t = np.eye(50, dtype=np.float32)[y]
        p = np.abs(z) + np.float32(0.01)
        short = rng.standard_normal((5000, 10))
        y_short = rng.integers(0, 10, 5000)
        long_rows = rng.standard_normal((1, 200_000)).astype(np.float32)
        return {
            "sparse logits": xent.sparse_categorical_crossentropy(y, z, from_logits=True),
            "dense logits": xent.categorical_crossentropy(t, z, from_logits=True,
                                                          label_smoothing=0.1),
            "short rows": xent.sparse_categorical_crossentropy(y_short, short,
                                                               from_logits=True),
            "short dense": xent.categorical_crossentropy(np.eye(10)[y_short], short,
                                                         from_logits=True),
            "long rows": xent.cross_entropy(long_rows, y[:1], reduction="none"),
            "sparse probs": xent.sparse_categorical_crossentropy(y, p),
            "dense probs": xent.categorical_crossentropy(t, p),
            "log_loss": xent.log_loss(y, p / p.sum(1, keepdims=True), labels=np.arange(50)),
            "evaluate": xent.evaluate(y, z, from_logits=True).to_dict(),
            "threads": xent.get_num_threads(),
        }

    def compare(parent, child, label):
        for key in parent:
            if key == "threads":
                continue
            a, b = parent[key], child[key]
            if key == "evaluate":  # every number, bit for bit (JSON: NaN equals NaN)
                assert json.dumps(a) == json.dumps(b), (label, key, a, b)
            else:
                assert np.array_equal(a, b), (label, key, a, b)
"""

POOL_SCRIPT = (
    WORK
    + """
    import multiprocessing as mp, sys

    if __name__ == "__main__":
        method = sys.argv[1]
        parent = [work(s) for s in range(3)]          # kernels (and threads) running first
        with mp.get_context(method).Pool(2) as pool:
            child = pool.map(work, range(3))
        for a, b in zip(parent, child):
            compare(a, b, method)
        print("ok", method, xent.threading_layer(), "child threads", child[0]["threads"])
"""
)

EXECUTOR_SCRIPT = (
    WORK
    + """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    if __name__ == "__main__":
        here = [work(s) for s in range(4)]
        with ProcessPoolExecutor(2, mp_context=mp.get_context("fork")) as pool:
            there = list(pool.map(work, range(4)))
        for a, b in zip(here, there):
            compare(a, b, "executor")
        print("ok", xent.threading_layer(), "child threads", there[0]["threads"])
"""
)


def _run_script(tmp_path, text, *args, env, timeout):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(text))
    return run_isolated([sys.executable, script, *args], env=env, timeout=timeout, cwd=tmp_path)


@pytest.mark.skipif(
    not EXPECT_TBB,
    reason="the tbb wheel exists for x86-64 Linux only here; elsewhere Numba's own search decides",
)
def test_fresh_install_selects_tbb_without_library_path():
    run = run_python(
        """
        import xent, xent._threading as th
        print(xent.threading_layer()); print(th.tbb_status)
    """,
        env={"LD_LIBRARY_PATH": None, "NUMBA_THREADING_LAYER": None},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    layer, status = run.stdout.splitlines()
    assert layer == "tbb", status
    assert status.startswith("loaded ") and "libtbb.so.12" in status


@pytest.mark.parametrize("layer", sorted(LAYERS))
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_pool_after_kernels_ran_in_parent(tmp_path, method, layer):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"the {method!r} start method does not exist on {sys.platform}")
    # the bound for the case that used to hang: well under a minute, compiling included
    run = _run_script(tmp_path, POOL_SCRIPT, method, env=LAYERS[layer], timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    words = run.stdout.split()
    assert words[:2] == ["ok", method], run.stdout
    ran_on, child_threads = words[2], int(words[-1])
    if layer == "omp":
        assert ran_on == "omp"
    elif EXPECT_TBB:
        assert ran_on == "tbb"
    if method == "fork" and ran_on == "omp":
        assert child_threads == 1  # serial builds: a parallel launch would kill the child
    else:
        assert child_threads >= 1


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_process_pool_executor_with_fork(tmp_path, layer):
    run = _run_script(tmp_path, EXECUTOR_SCRIPT, env=LAYERS[layer], timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ok"), run.stdout


def test_child_forked_before_any_kernel_keeps_its_threads():
    """Serial builds only where needed: a parent that never launched a kernel forks children
    that start their own OpenMP threads."""
    run = run_python(
        """
        import multiprocessing as mp
        import numpy as np
        import xent

        def work(_):
            xent.sparse_categorical_crossentropy([1, 0], np.eye(2), from_logits=True)
            return xent.get_num_threads()

        if __name__ == "__main__":
            with mp.get_context("fork").Pool(1) as pool:
                print(pool.map(work, [0])[0], xent.max_threads())
    """,
        env={"NUMBA_THREADING_LAYER": "omp"},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    got, top = map(int, run.stdout.split())
    assert got == top
