"""Forward + backward: xent's fused gradient against PyTorch autograd, torch.compile and JAX.

Run: ``python benchmarks/grad_speed.py [--rounds 7] [--readme README.md]``.

Timed as ``half_speed.py`` times (each implementation once per round, in turn; in each round
called twice and the second call timed, so that the peers' spinning thread pools slow nobody
but themselves; medians over the rounds).  Implementations come from ``xent.bench``'s
registry, each checked once against float64 (``sum_i g[i, y_i]`` of the gradient of the mean
loss).  Columns:

* read-write: a Numba kernel reading the logits and writing an array of their size (into
  the same preallocated array every call): the memory limit of any gradient;
* xent fwd: the loss alone (the exp-bound half of the work: one exp per element);
* xent: ``xent.value_and_grad`` returning a new gradient; in place: the same, written over
  a fresh copy of the logits (``inplace=True``; the copy is made before the timer starts);
  torch autograd: ``xent.cross_entropy(z).backward()`` with ``z.requires_grad``;
* torch / torch.compile / jax: ``F.cross_entropy(z, y).backward()`` (compiled by inductor
  where it runs) and ``jax.jit(jax.value_and_grad(loss))``.

"% of read-write" divides the bytes a fused call must move (logits read once, gradient
written once, and the targets for the dense loss) by its time, relative to the read-write
kernel's.  With ``--readme`` the table replaces the text between ``<!-- grad-speed -->``
markers; nothing in it is typed by hand.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _readme import splice

from xent import bench
from xent._bench_report import machine_info

SHAPES = [(100_000, 1_000), (8_192, 32_000), (1_000_000, 10), (1_024, 131_072)]


def _columns(kind: str) -> dict:
    name = "sparse" if kind == "sparse" else "categorical"
    return {
        "read-write": "read-write baseline",
        "xent fwd": None,
        "xent": f"xent {name} fwd+bwd",
        "xent in place": None,
        "xent torch autograd": f"xent {name} fwd+bwd (torch autograd)",
        "torch": f"torch {kind} fwd+bwd",
        "torch.compile": f"torch.compile {kind} fwd+bwd",
        "jax": f"jax {kind} fwd+bwd",
    }


def _extra_calls(data: bench.Data, kind: str) -> dict:
    """The loss alone, and the gradient in place over a fresh copy of the logits."""
    target = data.labels if kind == "sparse" else data.onehot
    scratch = data.scores.copy()

    def inplace():
        return bench.xent.value_and_grad(scratch, target, inplace=True)

    def refill():
        np.copyto(scratch, data.scores)

    inplace.before = refill  # untimed: a fresh copy of the logits for every timed call
    forward = bench.xent.cross_entropy
    return {"xent fwd": lambda: forward(data.scores, target), "xent in place": inplace}


def measure(case: bench.Case, kind: str, rounds: int) -> dict:
    data = bench.Data.make(case)
    want = bench.expected_mean(data)
    by_name = {i.name: i for i in bench.REGISTRY if i.available()}
    extra = _extra_calls(data, kind)
    calls = {}
    for column, name in _columns(kind).items():
        if name is None:
            calls[column] = extra[column]
            continue
        impl = by_name.get(name)
        fn = impl.make(data) if impl else None
        if fn is None:
            continue
        value = impl.checked(data, fn())  # compile / warm up, and check once
        if impl.loss != "baseline":
            assert np.isclose(value, want, rtol=bench.tolerance(impl, case), atol=1e-5), (
                name,
                value,
                want,
            )
        calls[column] = fn
    times = {column: [] for column in calls}
    for _ in range(rounds):
        for column, fn in calls.items():
            before = getattr(fn, "before", None)
            if before:
                before()
            fn()  # absorbs the previous implementation's spinning threads
            if before:
                before()
            start = time.perf_counter()
            fn()
            times[column].append(time.perf_counter() - start)
    return {column: float(np.median(t)) * 1e3 for column, t in times.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--readme", help="README to update between the markers")
    args = ap.parse_args(argv)
    machine = machine_info()
    columns = list(_columns("sparse"))
    head = "| loss | shape | " + " | ".join(f"{c} ms" for c in columns)
    head += " | % of read-write (xent, in place) | xent vs torch, torch.compile, jax |"
    lines = [
        f"Measured by `python benchmarks/grad_speed.py --dtype {args.dtype}` ({machine['cpu']}, "
        f"{bench.xent.get_num_threads()} threads; median of {args.rounds} interleaved rounds, "
        f"second of two calls timed; mean loss of {args.dtype} logits and its gradient):",
        "",
        head,
        "|---|---" + "|---:" * (len(columns) + 2) + "|",
    ]
    for rows, classes in SHAPES:
        for kind in ("sparse", "dense"):
            case = bench.Case(rows, classes, args.dtype, task="grad")
            ms = measure(case, kind, args.rounds)
            cells = ["—" if c not in ms else f"{ms[c]:.1f}" for c in columns]
            # bytes a fused call moves, in units of the read-write kernel's (read + write)
            moved = 1.0 if kind == "sparse" else 1.5
            pct = ", ".join(
                f"{100 * moved * ms['read-write'] / ms[c]:.0f}%" for c in ("xent", "xent in place")
            )
            vs = ", ".join(
                f"{ms[c] / ms['xent']:.1f}x" if c in ms else "—"
                for c in ("torch", "torch.compile", "jax")
            )
            lines.append(
                f"| {kind} | {rows:,} x {classes:,} | " + " | ".join(cells) + f" | {pct} | {vs} |"
            )
            print(lines[-1], flush=True)
    block = "\n".join(lines)
    if args.readme:
        splice(args.readme, f"<!-- grad-speed-{args.dtype} -->", block)
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
