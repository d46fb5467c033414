"""What ``xent bench`` prints and draws: the machine it ran on, speed-ups, the table and
the plot of a report made by :func:`xent.bench.run`."""

from __future__ import annotations

import numpy as np


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def machine_info() -> dict:
    import os
    import platform

    import numba

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
    )


def speedups(entry: dict) -> dict:
    """Per case: sparse over categorical (xent), and xent over each peer of the same loss."""
    by = {r["impl"]: r for r in entry["results"]}
    suffix = " fwd+bwd" if entry.get("case", {}).get("task") == "grad" else ""
    out = {}
    if "xent sparse" in by and "xent categorical" in by:
        out["sparse vs categorical"] = by["xent categorical"]["ms"] / by["xent sparse"]["ms"]
    if "xent sparse gather" in by and "xent categorical" in by:
        out["gather vs categorical"] = by["xent categorical"]["ms"] / by["xent sparse gather"]["ms"]
    for r in entry["results"]:
        if r["impl"].startswith("xent") or r["loss"] == "baseline":
            continue
        mine = by.get(("xent sparse" if r["loss"] == "sparse" else "xent categorical") + suffix)
        if mine:
            out[f"vs {r['impl']}"] = r["ms"] / mine["ms"]
    return out


def format_table(report: dict) -> str:
    """A plain-text (Markdown) table of a :func:`run` report."""
    lines = []
    m = report["machine"]
    lines.append(
        f"{m['cpu']}, {m['cores']} cores; numba {m['numba']}, "
        f"{report['threads']} threads ({report['threading_layer']})"
    )
    for entry in report["results"]:
        lines.append("")
        lines.append(f"### {entry['label']}")
        base = next((r["impl"] for r in entry["results"] if r["loss"] == "baseline"), "baseline")
        lines.append(f"| implementation | ms | GB/s | % of {base} | extra MiB | correct |")
        lines.append("|---|---:|---:|---:|---:|:-:|")
        for r in entry["results"]:
            mib = r.get("peak_extra_mib")
            mib = "n/a" if mib is None else f"{mib:.1f}"
            lines.append(
                f"| {r['impl']} | {r['ms']:.2f} | {r['gbps']:.1f} | "
                f"{r['pct_of_baseline']:.0f}% | {mib} | "
                f"{'yes' if r['correct'] else 'NO'} |"
            )
        sp = speedups(entry)
        if sp:
            lines.append("")
            lines.append("speed-ups: " + ", ".join(f"{k} {v:.1f}x" for k, v in sp.items()))
    st = report.get("startup")
    if st:
        lines.append("")
        lines.append("### Start-up (fresh processes, one empty kernel cache)")
        for name, v in st.items():
            if "error" in v:
                lines.append(f"- {name}: failed: {v['error']}")
            else:
                lines.append(
                    f"- {name}: import {v['import_s']:.2f} s, first sparse call "
                    f"{v['first_sparse_call_s']:.2f} s, first dense call "
                    f"{v['first_dense_call_s']:.2f} s"
                )
    lines.append("")
    lines.append(
        "extra MiB: peak NumPy allocation during one call beyond the inputs (tracemalloc; "
        "n/a for peers that allocate outside NumPy)."
    )
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Bar chart of % of the row-sum bandwidth per case and implementation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = report["results"]
    names = sorted({r["impl"] for e in entries for r in e["results"] if r["loss"] != "baseline"})
    fig, ax = plt.subplots(figsize=(max(8, 2.2 * len(entries)), 5))
    width = 0.8 / max(len(names), 1)
    for j, name in enumerate(names):
        vals = [
            next((r["pct_of_baseline"] for r in e["results"] if r["impl"] == name), 0)
            for e in entries
        ]
        ax.bar(np.arange(len(entries)) + j * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(entries)) + 0.4 - width / 2)
    ax.set_xticklabels([e["label"].replace(" ", "\n", 1) for e in entries], fontsize=8)
    ax.set_ylabel("% of row-sum bandwidth (higher is faster)")
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
