"""The engine's capability table: each call goes to the kernel meant for it, and a kernel is
never handed an option it does not implement."""

import weakref

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
        ("sparse", SHORT, {"from_logits": False}, "sparse_probs_short_rows"),
        ("sparse", SHORT, {"from_logits": False, "smoothing": 0.1}, "sparse_probs"),
        ("sparse", WIDE, {"from_logits": False}, "sparse_probs"),
        ("dense", SHORT, {"from_logits": False, "smoothing": 0.2}, "dense_probs_short_rows"),
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


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make",
    [
        lambda a: _read_only(a),
        lambda a: _read_only(a)[::-1, ::-1],  # negative strides
        lambda a: np.broadcast_to(a[:1], a.shape),  # zero stride
        lambda a: _read_only(np.asfortranarray(a)),
        lambda a: _read_only(a)[:0],
    ],
    ids=["C", "reversed", "broadcast", "F", "empty"],
)
def test_writable_alias_is_the_same_memory(make):
    a = make(np.arange(60, dtype=np.float32).reshape(6, 10))
    alias = _engine.writable_alias(a)
    assert alias.flags.writeable and not a.flags.writeable
    assert alias.shape == a.shape and alias.dtype == a.dtype
    np.testing.assert_array_equal(alias, a)
    if a.size:
        assert alias.strides == a.strides
        assert alias.__array_interface__["data"][0] == a.__array_interface__["data"][0]
        assert alias.flags.c_contiguous == a.flags.c_contiguous
        assert alias.flags.f_contiguous == a.flags.f_contiguous


def test_writable_alias_keeps_its_source_alive():
    source = _read_only(np.arange(1000.0))
    alive = weakref.ref(source)
    alias = _engine.writable_alias(source)
    del source
    assert alive() is not None  # the alias holds it
    np.testing.assert_array_equal(alias, np.arange(1000.0))
    del alias
    assert alive() is None  # and nothing else does


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_read_only_input_runs_the_build_of_writable_input(kind):
    """A read-only input (JAX arrays, broadcasts, memory maps) runs the machine code compiled
    for writable input of the same layout: no second compilation, the same bits."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 12)).astype(np.float32)
    second = rng.integers(0, 12, 300) if kind == "sparse" else rng.random((300, 12))
    run = _engine.sparse_rows if kind == "sparse" else _engine.dense_rows
    launched = _engine._kernel(choose(kind, z, RowOptions()).kernel)
    kernel = getattr(launched, "__wrapped__", launched)  # the dispatcher itself
    want, _ = run(z, second)
    compiled = len(kernel.signatures)
    got, _ = run(_read_only(z), _read_only(second))
    assert len(kernel.signatures) == compiled
    np.testing.assert_array_equal(got, want)


def test_float64_total_sums_float32_exactly_enough_in_any_layout():
    """The reductions' float64 total of float32 losses (a compiled loop) against exact
    float64 sums: far inside float32's resolution, inf and NaN as NumPy's sum, any stride;
    other dtypes go to NumPy."""
    import math

    rng = np.random.default_rng(4)
    x = (rng.standard_normal(100_003) * 10).astype(np.float32) ** 2
    exact = math.fsum(x.astype(np.float64))
    assert _engine.float64_total(x) == pytest.approx(exact, rel=1e-13)
    strided = x[::3]
    want = math.fsum(strided.astype(np.float64))
    assert _engine.float64_total(strided) == pytest.approx(want, rel=1e-13)
    assert _engine.float64_total(np.empty(0, np.float32)) == 0.0
    # a total above float32's largest value stays finite in float64
    big = np.full(10, 3e38, np.float32)
    assert _engine.float64_total(big) == pytest.approx(3e39, rel=1e-7)
    for special in (np.inf, np.nan):
        y = x.copy()
        y[17] = special
        got = _engine.float64_total(y)
        assert (got == np.inf) if special == np.inf else np.isnan(got)
    x64 = x.astype(np.float64)
    assert _engine.float64_total(x64) == np.sum(x64)  # NumPy's pairwise sum


def _short_total_cases():
    """Calls of each short-row kernel that takes chunk totals: several blocks per chunk and a
    partial last block, ignored rows, rows summed again (a logit far above the label's),
    class weights, smoothing, lse, float64, 16-bit rows, narrow labels, strided and
    F-ordered rows."""
    from xent._frameworks import BFLOAT16

    rng = np.random.default_rng(11)
    n, c = 64 * 300 + 37, 10
    z = rng.standard_normal((n, c)).astype(np.float32) * 3
    z[::50, 1] = 80.0
    y = rng.integers(0, c, n)
    y[::7] = _engine.IGNORED
    t = rng.dirichlet(np.ones(c), n).astype(np.float32)
    p = np.exp(z.astype(np.float64) - z.max(1, keepdims=True))
    p = (p / p.sum(1, keepdims=True)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, c)
    bf16 = (z.view(np.uint32) >> 16).astype(np.uint16).view(BFLOAT16)
    return [
        ("sparse", z, y, RowOptions()),
        ("sparse", z, y, RowOptions(smoothing=0.1, class_weights=w, want_lse=True)),
        ("sparse", z.astype(np.float64), y.astype(np.int16), RowOptions()),
        ("sparse", np.asfortranarray(z), np.where(y < 0, 0, y).astype(np.uint8), RowOptions()),
        ("sparse", bf16, y, RowOptions()),
        ("dense", z, t, RowOptions()),
        ("dense", z[:, :7], t[:, :7], RowOptions(smoothing=0.2, class_weights=w[:7])),
        ("dense", z[::2], t[::2].astype(np.float64), RowOptions()),
        ("sparse", p, y, RowOptions(from_logits=False)),
        ("dense", p, t, RowOptions(from_logits=False, smoothing=0.1)),
    ]


@pytest.mark.parametrize("case", range(10))
def test_short_row_kernels_total_their_own_losses(case):
    """The float64 loss sums the short-row kernels take per chunk (for the front ends' means)
    against the exact sum of the losses they return; the same on 1, 2 and all threads; the
    losses the same as without totals; a NaN loss makes the total NaN."""
    import math

    from helpers import per_thread_count

    kind, rows, second, options = _short_total_cases()[case]
    assert choose(kind, rows, options).chunk_sums
    with_total = _engine.sparse_losses if kind == "sparse" else _engine.dense_losses
    alone = _engine.sparse_rows if kind == "sparse" else _engine.dense_rows
    runs = per_thread_count(lambda: with_total(rows, second, options))
    got = runs[0]
    assert np.isfinite(got.loss).all()
    np.testing.assert_array_equal(got.loss, alone(rows, second, options)[0])
    assert got.total == pytest.approx(math.fsum(got.loss.astype(np.float64)), rel=1e-12, abs=0)
    for other in runs[1:]:
        np.testing.assert_array_equal(other.loss, got.loss)
        assert other.total == got.total
    spoiled = np.array(rows)  # a copy, in C order
    if spoiled.dtype.kind == "V":  # bfloat16 as raw bits: a quiet NaN
        spoiled.view(np.uint16)[-3, 2] = 0x7FC0
    else:
        spoiled[-3, 2] = np.nan  # the last row with a counted label: see y[::7]
    assert math.isnan(with_total(spoiled, second, options).total)


@pytest.mark.parametrize("case", [0, 1, 2, 3, 4, 8])
def test_sparse_kernels_count_labels_outside_the_row(case):
    """The count of labels outside ``[0, C)`` (``IGNORED`` included) that the sparse kernels
    return for the front ends' range check, against NumPy's count: placed in the first and
    last rows, in a partial last block, in every label dtype the kernels read; kernels
    without chunk outputs (wide rows, options they lack) count nothing (``None``: the front
    end then makes the usual check, ``_inputs.check_counted_labels``)."""
    _, rows, labels, options = _short_total_cases()[case]
    c = rows.shape[1]
    labels = labels.copy()
    n = labels.shape[0]
    info = np.iinfo(labels.dtype)
    for places, value in (([], 0), ([0], c), ([n - 1, n - 2], info.max), ([5, n - 40], -1)):
        if value < 0 and info.min == 0:
            value = info.max - 1  # unsigned: no negative label to place
        bad = labels.copy()
        bad[places] = value
        want = int(np.count_nonzero((bad < 0) | (bad >= c)))
        assert _engine.sparse_losses(rows, bad, options).outside == want
    wide = np.zeros((40, 200), np.float32)
    for opts, kernel in ((RowOptions(), "sparse_logits"), (RowOptions(softcap=3.0), None)):
        y = np.arange(40) * 7 - 3  # -3, 4, ..., 270: one negative, 11 from 200 (k >= 29) up
        assert _engine.sparse_losses(wide, y, opts).outside is None
        if kernel:
            assert not choose("sparse", wide, opts).chunk_sums


def test_only_short_row_kernels_total():
    """Other kernels leave the total to the caller (``None``), an empty loss array totals 0,
    and ``sparse_rows`` still returns just the loss and lse."""
    wide = np.random.default_rng(2).standard_normal((50, 1000)).astype(np.float32)
    labels = np.zeros(50, np.int64)
    assert _engine.sparse_losses(wide, labels).total is None
    assert _engine.dense_losses(wide, np.ones_like(wide) / 1000).total is None
    capped = RowOptions(softcap=5.0)
    assert _engine.sparse_losses(SHORT, np.zeros(100, np.int64), capped).total is None
    empty = np.empty((0, 8), np.float32)
    assert _engine.sparse_losses(empty, np.empty(0, np.int64)).total == 0.0
    assert len(_engine.sparse_rows(SHORT, np.zeros(100, np.int64))) == 2


INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_integer_range_is_min_and_max_in_every_integer_dtype(dtype):
    """The label range check's one-pass (min, max) against Python's own ``min``/``max`` of the
    values: both ends of the dtype, placed first, last and in the middle, at lengths on both
    sides of the compiled pass's threshold and at a length that is not a multiple of any
    vector; strided arrays (NumPy's path) too."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(5)
    n0 = _engine.RANGE_KERNEL_MIN
    for n in (1, 7, n0 - 1, n0, n0 + 1, 3 * n0 + 13):
        x = rng.integers(info.min // 2, info.max // 2, size=n, dtype=dtype, endpoint=True)
        for lo_at, hi_at in ((0, n - 1), (n - 1, 0), (n // 2, n // 3)):
            y = x.copy()
            y[hi_at] = info.max
            y[lo_at] = info.min  # where both ends share a place, min wins: still checked
            values = y.tolist()
            assert _engine.integer_range(y) == (min(values), max(values)), (n, lo_at, hi_at)
        strided = x[::2]
        values = strided.tolist()
        assert _engine.integer_range(strided) == (min(values), max(values))


def test_kernels_run_balanced_and_restore_the_chunk_size():
    # the engine hands a kernel's pieces out one at a time (chunk size 1) for the call only;
    # the caller's own setting is back afterwards, also when the kernel raises
    import numba

    seen = []

    def fake_kernel(*args):
        seen.append((numba.get_parallel_chunksize(), args))
        if args == ("raise",):
            raise ValueError("from the kernel")
        return "result"

    previous = numba.set_parallel_chunksize(7)
    try:
        assert _engine._balanced(fake_kernel)(1, 2) == "result"
        with pytest.raises(ValueError, match="from the kernel"):
            _engine._balanced(fake_kernel)("raise")
        assert numba.get_parallel_chunksize() == 7
    finally:
        numba.set_parallel_chunksize(previous)
    assert seen == [(1, (1, 2)), (1, ("raise",))]
    assert _engine._balanced(fake_kernel).__wrapped__ is fake_kernel
    if not _engine.serial_only():
        assert _engine._kernel(fake_kernel)(3) == "result" and seen[-1] == (1, (3,))


def test_every_parallel_loop_runs_over_pieces():
    # With pieces handed out one at a time, a prange over rows would be handed out row by
    # row (a 1,000,000 x 10 row sum took 59x as long): every parallel loop of the kernels
    # must run over at most ROW_CHUNKS pieces (``(n + per - 1) // per`` with ``per`` from
    # row_chunks) or over the ROW_PIECES of a split row.  (The baselines, a plain row sum
    # and exp floor, keep Numba's default schedule and are not checked.)
    import inspect
    import re
    from pathlib import Path

    loops = []
    for path in sorted(Path(inspect.getfile(kernels)).parent.glob("*.py")):
        if path.name == "baseline.py":
            continue
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            for arg in re.findall(r"\bprange\((.*)\):", line):
                loops.append((path.name, line_no, arg))
    assert len(loops) >= 18, loops  # the scan found the kernels' loops
    pieces = re.compile(r"^\((\w+(\.shape\[0\])?) \+ per - 1\) // per$|^ROW_PIECES$")
    assert [loop for loop in loops if not pieces.match(loop[2])] == []
    from xent.kernels.rows import row_chunks

    for n in (0, 1, 255, 256, 257, 10**6 + 1):
        assert -(-n // row_chunks(n)) <= kernels.ROW_CHUNKS
