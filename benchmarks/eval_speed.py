"""One-pass evaluation against the usual multi-pass recipes (NumPy; PyTorch when installed).

Run: ``python benchmarks/eval_speed.py [--rows N --classes C] [--readme README.md]``.
Each recipe computes mean cross-entropy, top-1 and top-5 accuracy from float32 logits and
integer labels; every result is checked against xent's before it is timed.  With
``--readme`` the table replaces the text between ``<!-- eval-speed -->`` markers.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _readme import splice

import xent


def numpy_recipe(z, y):
    """Loss by a log-softmax, accuracy by argmax, top-5 by argpartition: three passes."""
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    rows = np.arange(len(y))
    loss = float(np.mean(lse - z[rows, y]))
    acc = float(np.mean(z.argmax(axis=1) == y))
    top5 = np.argpartition(-z, 4, axis=1)[:, :5]
    top5_acc = float(np.mean((top5 == y[:, None]).any(axis=1)))
    return loss, acc, top5_acc


def torch_recipe():
    try:
        import torch
    except ImportError:
        return None
    F = torch.nn.functional

    def run(z, y):
        zt, yt = torch.from_numpy(z), torch.from_numpy(y)
        loss = float(F.cross_entropy(zt, yt))
        top = zt.topk(5, dim=1).indices
        acc = float((top[:, 0] == yt).float().mean())
        top5 = float((top == yt[:, None]).any(dim=1).float().mean())
        return loss, acc, top5

    return run


def xent_recipe(z, y):
    ev = xent.evaluate(y, z, from_logits=True, top_k=(1, 5))
    return ev.loss, ev.accuracy, ev.top_k_accuracy[5]


def median_ms(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--readme")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((args.rows, args.classes), np.float32) * 3
    y = rng.integers(0, args.classes, args.rows)
    # a model that is right sometimes, so accuracies are not all 0
    hit = rng.random(args.rows) < 0.4
    z[np.arange(args.rows)[hit], y[hit]] += 8
    want = xent_recipe(z, y)
    recipes = [
        ("xent.evaluate (one pass)", xent_recipe),
        ("NumPy: log-softmax + argmax + argpartition", numpy_recipe),
    ]
    tr = torch_recipe()
    if tr is not None:
        recipes.append(("PyTorch: F.cross_entropy + topk(5)", tr))
    lines = [
        f"Measured by `python benchmarks/eval_speed.py` ({args.rows:,} x {args.classes:,} float32 "
        f"logits, {xent.get_num_threads()} threads, median of {args.repeat}); mean loss, top-1 "
        "and top-5 accuracy, each recipe checked against xent's numbers:",
        "",
        "| recipe | ms | xent is faster by |",
        "|---|---:|---:|",
    ]
    base = None
    for name, fn in recipes:
        got = fn(z, y)
        np.testing.assert_allclose(got, want, rtol=1e-4, err_msg=name)
        ms = median_ms(lambda fn=fn: fn(z, y), args.repeat)
        base = base or ms
        lines.append(f"| {name} | {ms:.1f} | {'—' if ms == base else f'{ms / base:.1f}x'} |")
        print(lines[-1], flush=True)
    block = "\n".join(lines)
    if args.readme:
        splice(args.readme, "<!-- eval-speed -->", block)
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
