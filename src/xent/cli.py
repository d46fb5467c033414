"""The ``xent`` command line.

``xent bench`` benchmarks the kernels against the memory limit and installed peers;
``xent eval`` evaluates saved predictions in one streaming pass; ``xent demo`` prints both
losses on the Keras documentation example and a quick timing.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def _demo(args) -> int:
    import xent

    y_pred = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    labels = np.array([1, 2])
    onehot = np.eye(3)[labels]
    print("Keras documentation example: y_pred =", y_pred.tolist(), "labels =", labels.tolist())
    sparse = xent.sparse_categorical_crossentropy(labels, y_pred)
    dense = xent.categorical_crossentropy(onehot, y_pred)
    print(f"  sparse_categorical_crossentropy per sample: {np.round(sparse, 7).tolist()}")
    print(f"  categorical_crossentropy        per sample: {np.round(dense, 7).tolist()}")
    mean = float(xent.SparseCategoricalCrossentropy()(labels, y_pred))
    print(f"  mean: {mean:.7f} (Keras: 1.1769392)")
    if args.rows and args.classes:
        from xent.bench import Case, Data

        n, c = args.rows, args.classes
        logit_data = Data.make(Case(n, c, "float32", "logits"))
        logits, y, t = logit_data.scores, logit_data.labels, logit_data.onehot
        probs = Data.make(Case(n, c, "float32", "probs")).scores
        print(f"\nTiming on {n:,} x {c:,} float32 (median of {args.repeat}, after a warm-up call):")
        cases = [
            (
                "sparse, logits",
                lambda: xent.sparse_categorical_crossentropy(y, logits, from_logits=True),
            ),
            ("dense,  logits", lambda: xent.categorical_crossentropy(t, logits, from_logits=True)),
            ("sparse, probs", lambda: xent.sparse_categorical_crossentropy(y, probs)),
            (
                "sparse, probs, renormalize=False",
                lambda: xent.sparse_categorical_crossentropy(y, probs, renormalize=False),
            ),
            ("dense,  probs", lambda: xent.categorical_crossentropy(t, probs)),
        ]
        for name, fn in cases:
            fn()
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            print(f"  {name:<34} {np.median(times) * 1e3:8.2f} ms")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xent", description="Fast cross-entropy losses.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="print both losses on the Keras example and a quick timing")
    demo.add_argument(
        "--rows", type=int, default=100_000, help="rows of the timing batch (0: skip)"
    )
    demo.add_argument("--classes", type=int, default=1_000, help="classes of the timing batch")
    demo.add_argument("--repeat", type=int, default=5, help="timed calls per case")
    demo.set_defaults(func=_demo)

    bench = sub.add_parser(
        "bench",
        help="time sparse vs categorical, against the bandwidth baseline and installed peers",
        description="Times xent's sparse and categorical losses, a plain Numba row sum over "
        "the same array (the memory limit) and every installed peer (NumPy; PyTorch and JAX "
        "when installed) on large batches; prints ms, GB/s, %% of the row-sum bandwidth and "
        "speed-ups. Every result is checked against a float64 NumPy evaluation.",
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="small shapes (a few seconds)")
    size.add_argument("--full", action="store_true", help="all shapes, float32 and float64")
    bench.add_argument("--json", action="store_true", help="print the report as JSON")
    bench.add_argument("--output", metavar="FILE.json", help="also write the JSON report here")
    bench.add_argument(
        "--csv",
        metavar="FILE.csv",
        help="also write one row per (kernel, provider, shape, dtype, metric) with p20/p50/p80",
    )
    bench.add_argument(
        "--plot", metavar="FILE.png", help="draw times against the limits (needs matplotlib)"
    )
    bench.add_argument(
        "--repeat",
        type=int,
        default=7,
        help="rounds, each timing every entry of a case once in a shuffled order (median)",
    )
    bench.add_argument(
        "--budget",
        type=float,
        default=1.5,
        help="seconds per entry: no further round once a case has used that many times its "
        "entries (min 3 rounds)",
    )
    bench.set_defaults(func=_bench)

    from xent._eval_cli import add_parser

    add_parser(sub)
    return parser


def _bench(args) -> int:
    from xent import bench

    return bench.main(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
