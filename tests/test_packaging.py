"""Install modes, each built from the source tree in a temporary folder, as a user would.

For each way pip can install xent (a venv, editable or not; ``--user``; a system-wide prefix;
``--target``) the installed package must ship ``xent.kernels``, select TBB where the installed
wheel's library exists (x86-64 Linux), and survive a ``fork`` pool after kernels ran in the
parent with the parent's numbers.  ``--target`` drops a wheel's data files (tbb's ``lib/``),
so there xent runs on OpenMP and a forked child on serial builds of the kernels.
"""

import os
import platform
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from subproc import run_isolated

ROOT = Path(__file__).resolve().parents[1]
BASE_PYTHON = Path(getattr(sys, "_base_executable", sys.executable))
LINUX_X86_64 = sys.platform == "linux" and platform.machine() == "x86_64"
INSTALL_TIMEOUT = 900
RUN_TIMEOUT = 120

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree"),
    pytest.mark.skipif(
        not LINUX_X86_64,
        reason="the install layouts checked here (the tbb "
        "wheel's lib/ beside site-packages) are those of x86-64 Linux",
    ),
]

#: Run by the installed package: where it was imported from, the layer, and a fork pool.
CHECK = textwrap.dedent("""
    import multiprocessing as mp
    import numpy as np
    import xent, xent.kernels, xent._threading as th

    def work(seed):
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((2000, 40)).astype(np.float32)
        y = rng.integers(0, 40, 2000)
        return xent.sparse_categorical_crossentropy(y, z, from_logits=True), \\
            xent.get_num_threads()

    if __name__ == "__main__":
        doc = float(xent.SparseCategoricalCrossentropy()([1, 2], [[.05, .95, 0], [.1, .8, .1]]))
        parent = [work(s)[0] for s in range(2)]
        with mp.get_context("fork").Pool(2) as pool:
            child = pool.map(work, range(2))
        same = all(np.array_equal(a, b) for a, (b, _) in zip(parent, child))
        print(xent.kernels.__file__)
        print(xent.threading_layer())
        print(th.tbb_status)
        print(repr(doc), same, child[0][1])
""")


def _source_copy(tmp_path) -> Path:
    """The project's files, copied: a build writes ``build/`` and ``*.egg-info`` into the tree
    it builds, which must not be the developer's checkout."""
    dest = tmp_path / "source"
    shutil.copytree(
        ROOT,
        dest,
        ignore=shutil.ignore_patterns(
            ".git",
            ".venv",
            "build",
            "dist",
            "__pycache__",
            "*.egg-info",
            ".*_cache",
            ".hypothesis",
            ".benchmarks",
        ),
    )
    return dest


def _clean_env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "PIP_", "VIRTUAL_ENV", "NUMBA_", "LD_LIBRARY_PATH"))
    }
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def _pip(python, *args, env):
    run = run_isolated(
        [python, "-m", "pip", "install", "-q", *args],
        env=env,
        timeout=INSTALL_TIMEOUT,
        replace_env=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def _venv(path):
    run = run_isolated(
        [BASE_PYTHON, "-m", "venv", path], env=_clean_env(), timeout=300, replace_env=True
    )
    assert run.returncode == 0, run.stderr
    return path / "bin" / "python"


def _check(python, tmp_path, env, *, expect_layer, installed_under):
    script = tmp_path / "check.py"
    script.write_text(CHECK)
    run = run_isolated(
        [python, script], env=env, timeout=RUN_TIMEOUT, cwd=tmp_path, replace_env=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    kernels_file, layer, status, result = run.stdout.splitlines()
    assert Path(kernels_file).resolve().is_relative_to(Path(installed_under).resolve()), (
        kernels_file
    )
    assert layer == expect_layer, status
    doc, same, child_threads = result.split()
    assert abs(float(doc) - 1.1769392) < 1e-6  # the Keras documentation example
    assert same == "True"  # the forked pool returned the parent's numbers
    if layer == "omp":
        assert int(child_threads) == 1
    return status


def _base_has_pip():
    run = run_isolated(
        [BASE_PYTHON, "-m", "pip", "--version"], env=_clean_env(), timeout=60, replace_env=True
    )
    return run.returncode == 0


def _base_has_user_site():
    run = run_isolated(
        [BASE_PYTHON, "-c", "import site; print(site.ENABLE_USER_SITE)"],
        env=_clean_env(),
        timeout=60,
        replace_env=True,
    )
    return run.stdout.strip() == "True"


def test_venv_editable(tmp_path):
    python = _venv(tmp_path / "venv")
    env = _clean_env()
    _pip(python, "-e", ROOT, env=env)
    status = _check(python, tmp_path, env, expect_layer="tbb", installed_under=ROOT)
    assert status == f"loaded {(tmp_path / 'venv' / 'lib' / 'libtbb.so.12').resolve()}"


def test_venv_non_editable(tmp_path):
    python = _venv(tmp_path / "venv")
    env = _clean_env()
    _pip(python, _source_copy(tmp_path), env=env)
    _check(python, tmp_path, env, expect_layer="tbb", installed_under=tmp_path / "venv")
    assert (tmp_path / "venv" / "lib" / "libtbb.so.12").exists()


def test_user_install(tmp_path):
    if not (_base_has_pip() and _base_has_user_site()):
        pytest.skip("the base interpreter has no pip or its user site is disabled")
    env = _clean_env(PYTHONUSERBASE=str(tmp_path / "userbase"))
    _pip(BASE_PYTHON, "--user", _source_copy(tmp_path), env=env)
    status = _check(
        BASE_PYTHON, tmp_path, env, expect_layer="tbb", installed_under=tmp_path / "userbase"
    )
    assert status == f"loaded {(tmp_path / 'userbase' / 'lib' / 'libtbb.so.12').resolve()}"


def test_system_wide_layout(tmp_path):
    """``--prefix`` lays files out as a system-wide install does (``<prefix>/lib/pythonX.Y/
    site-packages`` with tbb's library in ``<prefix>/lib``, a folder the loader does not
    search); the interpreter finds the packages through PYTHONPATH as it would find its own
    site-packages."""
    if not _base_has_pip():
        pytest.skip("the base interpreter has no pip")
    prefix = tmp_path / "prefix"
    _pip(BASE_PYTHON, "--prefix", prefix, _source_copy(tmp_path), env=_clean_env())
    purelib = (
        prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    )
    env = _clean_env(PYTHONPATH=str(purelib))
    status = _check(BASE_PYTHON, tmp_path, env, expect_layer="tbb", installed_under=prefix)
    assert status == f"loaded {(prefix / 'lib' / 'libtbb.so.12').resolve()}"


def test_target_install_without_tbb_library_never_hangs(tmp_path):
    if not _base_has_pip():
        pytest.skip("the base interpreter has no pip")
    target = tmp_path / "target"
    _pip(BASE_PYTHON, "--target", target, _source_copy(tmp_path), env=_clean_env())
    shipped = {p.name for p in (target / "xent" / "kernels").glob("*.py")}
    assert shipped == {p.name for p in (ROOT / "kernels").glob("*.py")}, shipped
    env = _clean_env(PYTHONPATH=str(target))
    status = _check(BASE_PYTHON, tmp_path, env, expect_layer="omp", installed_under=target)
    assert "not on disk" in status
