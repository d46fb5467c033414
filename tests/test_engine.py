"""The engine's capability table: each call goes to the kernel meant for it, and a kernel is
never handed an option it does not implement."""

import numpy as np
import pytest

from xent import _engine, kernels
from xent._engine import RowOptions, choose

SHORT = np.zeros((100, 8), np.float32)  # 32 bytes per row
WIDE = np.zeros((100, 1000), np.float32)
LONG = np.zeros((1, _engine.LONG_ROW), np.float32)  # fewer rows than threads
W = np.ones(8)
HALF96 = np.zeros((100, 96), np.float16)  # 192 bytes stored, 384 bytes once widened


def _name(kind, rows, **options):
    return choose(kind, rows, RowOptions(**options)).kernel.py_func.__name__


@pytest.mark.parametrize(
    "kind,rows,options,expected",
    [
        ("sparse", SHORT, {}, "sparse_logits_short_rows"),
        ("sparse", SHORT, {"smoothing": 0.1, "class_weights": W}, "sparse_logits_short_rows"),
        ("sparse", SHORT, {"softcap": 5.0}, "sparse_logits"),
        ("sparse", SHORT, {"class_mask": np.ones((100, 8), bool)}, "sparse_logits"),
        ("dense", SHORT, {"want_lse": True}, "dense_logits_short_rows"),
        ("dense", SHORT, {"softcap": 5.0}, "dense_logits"),
        ("sparse", WIDE, {}, "sparse_logits"),
        ("dense", WIDE, {}, "dense_logits"),
        ("sparse", SHORT, {"from_logits": False}, "sparse_probs"),
        ("dense", WIDE, {"from_logits": False, "smoothing": 0.2}, "dense_probs"),
        # 16-bit rows: sparse by stored size, dense by widened size (measured, see _engine)
        ("sparse", HALF96, {}, "sparse_logits_short_rows"),
        ("dense", HALF96, {}, "dense_logits"),
        ("dense", HALF96[:, :48], {}, "dense_logits_short_rows"),
    ],
)
def test_each_call_goes_to_its_kernel(kind, rows, options, expected):
    assert _name(kind, rows, **options) == expected


def test_long_rows_split_only_without_unsupported_options():
    if _engine.numba.get_num_threads() < 2:
        pytest.skip("the split kernels serve fewer rows than threads: needs 2 threads")
    assert _name("sparse", LONG) == "sparse_logits_long_rows"
    assert _name("sparse", LONG, class_weights=np.ones(LONG.shape[1])) == "sparse_logits_long_rows"
    assert _name("dense", LONG) == "dense_logits_long_rows"
    # the dense split kernel has no class weights, and neither split kernel caps
    assert _name("dense", LONG, class_weights=np.ones(LONG.shape[1])) == "dense_logits"
    assert _name("sparse", LONG, softcap=3.0) == "sparse_logits"


def test_every_table_entry_supports_what_its_launch_passes():
    for entry in _engine.TABLE:
        assert entry.kernel in {getattr(kernels, n) for n in kernels.__all__}
        if not entry.logits:
            assert not entry.supports & {"want_lse", "class_weights", "softcap", "class_mask"}


def test_options_need_logits_where_they_say_so():
    with pytest.raises(AssertionError, match="need logits"):
        RowOptions(from_logits=False, softcap=2.0)
    assert RowOptions(smoothing=0).smoothing == 0.0 and isinstance(RowOptions().epsilon, float)
