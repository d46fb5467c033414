"""``xent eval --plot``: a reliability diagram and, for up to 50 classes, per-class accuracy,
drawn from an :class:`~xent.Evaluation` (matplotlib, optional)."""

from __future__ import annotations

import numpy as np

#: Classes up to which the report also draws per-class accuracy.
MAX_CLASSES_DRAWN = 50


def require_matplotlib(command: str):
    """The matplotlib module, set to draw into files, or an ``ImportError`` naming the
    command and how to install it.  The CLIs call it before their work, so that a missing
    plotting library is said at once, not after minutes of evaluation or timing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError(
            f"{command} --plot needs matplotlib: pip install 'xent[bench]' (or matplotlib)"
        ) from None
    matplotlib.use("Agg")
    return matplotlib


def plot_report(ev, path: str, title: str = "") -> None:
    """Write a PNG: confidence vs accuracy per bin (bars), the diagonal of perfect
    calibration, the gap, the share of rows per bin beneath; per-class accuracy with the
    support of each class when ``C <= 50``."""
    require_matplotlib("xent eval")
    import matplotlib.pyplot as plt

    cal = ev.calibration
    edges = np.asarray(cal["edges"])
    mids = (edges[:-1] + edges[1:]) / 2
    width = np.diff(edges)
    weight = np.asarray(cal["weight"])
    share = weight / weight.sum() if weight.sum() > 0 else weight
    acc = np.nan_to_num(np.asarray(cal["accuracy"]))
    conf = np.asarray(cal["confidence"])
    filled = weight > 0
    c = len(ev.class_accuracy) if ev.class_accuracy is not None else 0
    per_class = 0 < c <= MAX_CLASSES_DRAWN
    fig = plt.figure(figsize=(13 if per_class else 7, 7.5))
    grid = fig.add_gridspec(2, 2 if per_class else 1, height_ratios=[3, 1], hspace=0.08)
    ax = fig.add_subplot(grid[0, 0])
    ax.bar(mids, acc, width, color="#4c72b0", edgecolor="white", label="accuracy in bin")
    gap_lo = np.where(filled, np.minimum(acc, conf), 0)
    gap_hi = np.where(filled, np.abs(acc - np.nan_to_num(conf)), 0)
    ax.bar(
        mids,
        gap_hi,
        width,
        bottom=gap_lo,
        color="#dd8452",
        alpha=0.55,
        edgecolor="#dd8452",
        label="gap to mean confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.tick_params(labelbottom=False)
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title(
        f"Reliability ({ev.n_bins} bins): ECE {ev.ece:.4f}, max {ev.max_calibration_error:.4f}",
        fontsize=11,
    )
    ax2 = fig.add_subplot(grid[1, 0], sharex=ax)
    ax2.bar(mids, share * 100, width, color="#8c8c8c", edgecolor="white")
    for x, s, n in zip(mids, share, weight):
        if n > 0:
            ax2.annotate(f"{n:,.0f}", (x, s * 100), ha="center", va="bottom", fontsize=7)
    ax2.set_xlabel("confidence (top-1 probability)")
    ax2.set_ylabel("% of rows")
    ax2.set_ylim(0, max(share.max() * 100 * 1.25, 1))
    if per_class:
        ax3 = fig.add_subplot(grid[:, 1])
        classes = np.arange(c)
        ca = np.asarray(ev.class_accuracy)
        ax3.barh(classes, np.nan_to_num(ca), color="#55a868")
        ax3.axvline(ev.accuracy, color="k", ls="--", lw=1, label=f"accuracy {ev.accuracy:.3f}")
        ax3.axvline(
            ev.macro_accuracy,
            color="#c44e52",
            ls=":",
            lw=1.5,
            label=f"macro accuracy {ev.macro_accuracy:.3f}",
        )
        for k, (a, s) in enumerate(zip(ca, ev.class_support)):
            ax3.annotate(
                "no support" if s == 0 else f"{a:.3f} (n={s:,.0f})",
                (0 if a != a else a, k),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax3.set_yticks(classes)
        ax3.set_yticklabels([str(k) for k in classes], fontsize=7 if c > 20 else 9)
        ax3.invert_yaxis()
        ax3.set_xlim(0, 1.25)
        ax3.set_xlabel("accuracy (recall) of the rows of each class")
        ax3.set_ylabel("class")
        ax3.legend(loc="lower right", fontsize=9)
        ax3.set_title("Per-class accuracy", fontsize=11)
    fig.suptitle(
        (title + "\n" if title else "")
        + f"{ev.count:,} rows  loss {ev.loss:.4f} ± {ev.loss_stderr:.4f}  "
        f"accuracy {ev.accuracy:.4f} ± {ev.accuracy_stderr:.4f}  Brier {ev.brier:.4f}  "
        f"entropy {ev.entropy:.3f}",
        fontsize=11,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
