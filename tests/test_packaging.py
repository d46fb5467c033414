"""A normal (non-editable) install ships ``xent.kernels`` and works from a fresh process."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "pyproject.toml").exists(), reason="needs the source tree")
def test_non_editable_install_imports_kernels(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    assert (target / "xent" / "kernels" / "logits.py").exists()
    code = (
        "import xent, xent.kernels, numpy as np\n"
        "assert xent.kernels.__file__.startswith(%r), xent.kernels.__file__\n"
        "print(float(xent.SparseCategoricalCrossentropy()([1, 2], [[.05, .95, 0], [.1, .8, .1]])))\n"
    ) % str(target)
    env = dict(os.environ, PYTHONPATH=str(target), NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=600)
    assert run.returncode == 0, run.stderr
    assert abs(float(run.stdout) - 1.1769392) < 1e-6
