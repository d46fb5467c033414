"""pytest-benchmark suite over the shared registry (``xent.bench.REGISTRY``).

Run: ``pytest benchmarks/ --benchmark-only`` (``XENT_BENCH_FULL=1`` adds float64).
Groups are per (shape, dtype, logits-or-probabilities, loss or forward + backward); each
benchmark checks its value (for a gradient: ``sum_i g[i, y_i]``) against a float64 NumPy
evaluation and records GB/s, threads and the threading layer.
"""

import numba
import numpy as np
import pytest

from xent import bench


@pytest.mark.parametrize("impl", bench.REGISTRY, ids=lambda i: i.name.replace(" ", "-"))
def test_loss(benchmark, bench_data, impl):
    data, expected = bench_data
    if not impl.available():
        pytest.skip(f"{impl.requires} is not installed")
    fn = impl.make(data)
    if fn is None:
        pytest.skip(f"{impl.name} does not apply to {data.case.label}")
    if not impl.runs_on(data.case):
        pytest.skip(f"{impl.name} is not a {data.case.task} implementation")
    benchmark.group = data.case.label
    value = impl.checked(data, benchmark(fn))
    stats = benchmark.stats  # None under --benchmark-disable
    if stats is not None:
        median = stats.stats.median
        benchmark.extra_info.update(
            gbps=impl.nbytes(data) / median / 1e9,
            bytes_read=impl.nbytes(data),
            threads=numba.get_num_threads(),
            threading_layer=bench._threading_layer(),
        )
    if impl.loss not in bench.LIMITS:
        rtol = bench.tolerance(impl, data.case)
        ok = bool(np.isclose(value, expected, rtol=rtol, atol=1e-5))
        benchmark.extra_info["correct"] = ok
        # xent must be right; a peer's wrong value (PyTorch's float16 mean: inf) is recorded
        assert ok or not impl.name.startswith("xent"), (value, expected)
