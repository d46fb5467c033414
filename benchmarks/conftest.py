import os

import pytest

from xent import bench

_FULL = os.environ.get("XENT_BENCH_FULL") == "1"
CASES = bench.FULL if _FULL else bench.DEFAULT


@pytest.fixture(
    scope="module", params=CASES, ids=lambda c: c.label.replace(",", "").replace(" ", "-")
)
def bench_data(request):
    data = bench.Data.make(request.param)
    return data, bench.expected_mean(data)
