"""16-bit logits: xent on bfloat16/float16 against xent float32 and PyTorch/JAX on the same input.

Run: ``python benchmarks/half_speed.py [--dtype bfloat16] [--rounds 9] [--readme README.md]``.

Every implementation is timed once per round, in turn (interleaved), and the median over the
rounds is reported, so that drifts of the machine's memory bandwidth (this VM's varies by 2x
between allocations) hit all of them alike.  In each round every implementation is called
twice and the second call is timed: PyTorch's OpenMP threads and JAX's pool keep spinning
after a call and slowed whichever call came next by up to 1.7x, and a pause instead lets
the CPU and the thread pools fall asleep (measured: both distort).  Implementations come
from ``xent.bench``'s
registry (each checks its value against float64); "row-sum" is a plain Numba row sum over
the same 16-bit array (the memory limit), "xent float32" runs on a float32 copy of the same
values.  With ``--readme`` the table replaces the text between ``<!-- half-speed -->``
markers; nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _readme import splice

from xent import bench
from xent._bench_report import machine_info

SHAPES = [(1_000_000, 10), (100_000, 1_000), (8_192, 32_000), (1_024, 131_072)]
COLUMNS = {
    "row-sum": "row-sum baseline",
    "xent sparse": "xent sparse",
    "xent sparse f32": "xent sparse float32",
    "torch sparse": "torch sparse",
    "jax sparse": "jax sparse",
    "xent dense": "xent categorical",
    "xent dense f32": "xent categorical float32",
    "torch dense": "torch dense",
    "jax dense": "jax dense",
}


def measure(case: bench.Case, rounds: int) -> tuple[dict, set]:
    data = bench.Data.make(case)
    want = bench.expected_mean(data)
    by_name = {i.name: i for i in bench.REGISTRY if i.available()}
    calls, wrong = {}, set()
    for column, name in COLUMNS.items():
        impl = by_name.get(name)
        fn = impl.make(data) if impl else None
        if fn is None:
            continue
        value = fn()  # compile / warm up
        if impl.loss != "baseline" and not np.isclose(
            value, want, rtol=bench.tolerance(impl, case)
        ):
            assert not name.startswith("xent"), (name, value, want)
            wrong.add(column)  # a peer's wrong result (PyTorch's float16 mean: inf / NaN)
        calls[column] = fn
    times = {column: [] for column in calls}
    for _ in range(rounds):
        for column, fn in calls.items():
            fn()  # absorbs the previous implementation's spinning threads
            start = time.perf_counter()
            fn()
            times[column].append(time.perf_counter() - start)
    return {column: float(np.median(t)) * 1e3 for column, t in times.items()}, wrong


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--readme", help="README to update between the markers")
    args = ap.parse_args(argv)
    machine = machine_info()
    head = "| shape | " + " | ".join(COLUMNS) + " | row-sum % (sparse, dense) |"
    lines = [
        f"Measured by `python benchmarks/half_speed.py --dtype {args.dtype}` ({machine['cpu']}, "
        f"{bench.xent.get_num_threads()} threads; median of {args.rounds} interleaved rounds, "
        f"second of two calls timed; "
        f"ms per call, mean loss of {args.dtype} logits with int64 labels or one-hot "
        f"{args.dtype} targets):",
        "",
        head,
        "|---" + "|---:" * (len(COLUMNS) + 1) + "|",
    ]
    for rows, classes in SHAPES:
        ms, wrong = measure(bench.Case(rows, classes, args.dtype), args.rounds)
        cells = [
            "—" if c not in ms else f"{ms[c]:.1f}" + (" (wrong)" if c in wrong else "")
            for c in COLUMNS
        ]
        # the sparse loss reads the logits (plus labels); the dense one logits and targets
        pct = f"{100 * ms['row-sum'] / ms['xent sparse']:.0f}%, "
        pct += f"{100 * 2 * ms['row-sum'] / ms['xent dense']:.0f}%"
        lines.append(f"| {rows:,} x {classes:,} | " + " | ".join(cells) + f" | {pct} |")
        print(lines[-1], flush=True)
    if any("(wrong)" in line for line in lines):
        lines += [
            "",
            "(wrong): the result was off the float64 value (PyTorch's float16 mean is inf/NaN).",
        ]
    block = "\n".join(lines)
    if args.readme:
        splice(args.readme, f"<!-- half-speed-{args.dtype} -->", block)
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
