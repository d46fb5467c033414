"""One-pass evaluation against the usual multi-pass recipes (torchmetrics + PyTorch, NumPy +
scikit-learn), on the same data, in one run.

Run: ``python benchmarks/eval_speed.py [--rows N --classes C --rounds R] [--readme README.md]``.

Every recipe computes the same numbers: mean cross-entropy and its standard error, top-1 and
top-5 accuracy, macro (balanced) accuracy, ECE / RMS / maximum calibration error over 15
bins, the multiclass Brier score, mean predictive entropy and the mean reciprocal rank; each
is checked against xent's before it is timed.  For scale, the same run also times xent's
loss alone and a plain Numba row sum over the logits (the memory-bandwidth floor).
Recipes run interleaved, ``--rounds`` times, second of two calls timed; medians reported.
With ``--readme`` the table replaces the text between ``<!-- eval-speed -->`` markers.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from _readme import splice

import xent
from xent._engine import row_sums

NAMES = (
    "loss",
    "loss_stderr",
    "accuracy",
    "top5",
    "macro_accuracy",
    "ece",
    "rms_calibration_error",
    "max_calibration_error",
    "brier",
    "entropy",
    "mrr",
)


def xent_all(z, y):
    ev = xent.evaluate(y, z, from_logits=True, top_k=(1, 5))
    return {n: ev.top_k_accuracy[5] if n == "top5" else getattr(ev, n) for n in NAMES}


def calibration_numpy(conf, hit, n_bins=15):
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    w = np.bincount(b, minlength=n_bins).astype(np.float64)
    gap = np.abs(np.bincount(b, hit, n_bins) - np.bincount(b, conf, n_bins)) / np.maximum(w, 1)
    share = w / w.sum()
    return np.sum(share * gap), np.sqrt(np.sum(share * gap**2)), gap[w > 0].max()


def numpy_sklearn(z, y):
    """Softmax in NumPy, scikit-learn's metrics where it has them, NumPy for the rest."""
    from sklearn import metrics as skm

    n, c = z.shape
    labels = np.arange(c)
    m = z.max(1, keepdims=True)
    e = np.exp(z - m)
    p = e / e.sum(1, keepdims=True)
    logp = (z - m) - np.log(e.sum(1, keepdims=True))
    per_row = -logp[np.arange(n), y]
    pred = p.argmax(1)
    ece, rms, mce = calibration_numpy(p.max(1).astype(np.float64), (pred == y).astype(float))
    rank = np.sum(z > z[np.arange(n), y][:, None], 1)
    return {
        # not skm.log_loss: it clips p at float32's epsilon, capping the loss of logits
        "loss": float(per_row.mean()),
        "loss_stderr": per_row.std(ddof=1) / np.sqrt(n),
        "accuracy": skm.accuracy_score(y, pred),
        "top5": skm.top_k_accuracy_score(y, p, k=5, labels=labels),
        "macro_accuracy": skm.balanced_accuracy_score(y, pred),
        "ece": ece,
        "rms_calibration_error": rms,
        "max_calibration_error": mce,
        "brier": skm.brier_score_loss(y, p, labels=labels),
        "entropy": float(-np.sum(p * logp, 1).mean()),
        "mrr": float(np.mean(1.0 / (rank + 1))),
    }


def torchmetrics_recipe():
    try:
        import torch
        from torchmetrics import classification as tm
    except ImportError:
        return None
    F = torch.nn.functional

    def run(z, y):
        zt, yt = torch.from_numpy(z), torch.from_numpy(y)
        c = zt.shape[1]
        per_row = F.cross_entropy(zt, yt, reduction="none")
        p = torch.softmax(zt, 1)
        logp = torch.log_softmax(zt, 1)
        rank = (zt > zt.gather(1, yt[:, None])).sum(1)
        brier = ((p - F.one_hot(yt, c)) ** 2).sum(1).mean()
        out = {
            "loss": per_row.mean(),
            "loss_stderr": per_row.std() / len(y) ** 0.5,
            "accuracy": tm.MulticlassAccuracy(c, top_k=1, average="micro")(p, yt),
            "top5": tm.MulticlassAccuracy(c, top_k=5, average="micro")(p, yt),
            "macro_accuracy": tm.MulticlassAccuracy(c, average="macro")(p, yt),
            "ece": tm.MulticlassCalibrationError(c, n_bins=15, norm="l1")(p, yt),
            "rms_calibration_error": tm.MulticlassCalibrationError(c, n_bins=15, norm="l2")(p, yt),
            "max_calibration_error": tm.MulticlassCalibrationError(c, n_bins=15, norm="max")(p, yt),
            "brier": brier,
            "entropy": -(p * logp).sum(1).mean(),
            "mrr": (1.0 / (rank + 1.0)).mean(),
        }
        return {k: float(v) for k, v in out.items()}

    return run


def cpu_name() -> str:
    """The CPU's model name with its family and model numbers (a VM may show only "AMD
    EPYC": family 25 is Zen 3/4, family 26 Zen 5)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or "unknown CPU"
    name = info.get("model name", platform.processor() or "unknown CPU")
    return f"{name} (family {info.get('cpu family', '?')}, model {info.get('model', '?')})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--classes", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--readme")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    n, c = args.rows, args.classes
    z = rng.standard_normal((n, c), np.float32) * 3
    y = rng.integers(0, c, n)
    # a model that is right sometimes, so accuracies and calibration are not trivial
    hit = rng.random(n) < 0.4
    z[np.arange(n)[hit], y[hit]] += 8
    want = xent_all(z, y)
    sums = np.empty(n, np.float32)
    recipes = [
        ("row sum over the logits (Numba; memory floor)", lambda z, y: row_sums(z, sums), False),
        (
            "xent loss alone (`sparse_categorical_crossentropy`, mean)",
            lambda z, y: float(np.mean(xent.sparse_categorical_crossentropy(y, z, True))),
            False,
        ),
        ("**xent.evaluate: every number, one pass**", xent_all, True),
        ("NumPy softmax + scikit-learn metrics", numpy_sklearn, True),
    ]
    tr = torchmetrics_recipe()
    if tr is not None:
        recipes.append(("torchmetrics + PyTorch (CPU)", tr, True))
    for name, fn, checked in recipes:
        if checked:
            got = fn(z, y)
            for k in NAMES:
                np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=1e-6, err_msg=name + k)
    times = {name: [] for name, _, _ in recipes}
    for _ in range(args.rounds):
        for name, fn, _ in recipes:
            fn(z, y)
            t0 = time.perf_counter()
            fn(z, y)
            times[name].append(time.perf_counter() - t0)
    ms = {name: float(np.median(t)) * 1e3 for name, t in times.items()}
    base = ms["**xent.evaluate: every number, one pass**"]
    lines = [
        f"Measured by `python benchmarks/eval_speed.py` ({n:,} x {c:,} float32 logits, integer "
        f"labels; {cpu_name()}, {xent.get_num_threads()} threads; median of {args.rounds} "
        "interleaved rounds). Every recipe computes loss and its standard error, top-1, top-5 "
        "and macro accuracy, ECE / RMS / max calibration error (15 bins), Brier score, "
        "entropy and MRR, checked against xent's numbers before timing:",
        "",
        "| recipe | ms | relative to xent.evaluate |",
        "|---|---:|---:|",
    ]
    for name, _, _ in recipes:
        lines.append(f"| {name} | {ms[name]:.1f} | {ms[name] / base:.2f}x |")
    block = "\n".join(lines)
    print(block)
    if args.readme:
        splice(args.readme, "<!-- eval-speed -->", block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
