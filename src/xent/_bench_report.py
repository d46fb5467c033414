"""What ``xent bench`` prints and draws: the machine it ran on, speed-ups, the table and
the plot of a report made by :func:`xent.bench.run`."""

from __future__ import annotations

import numpy as np

from xent._engine import exp_vector_bits

#: What the limits are called in a result's ``loss`` field (not losses: no value is checked):
#: the row sum over the logits, the row sum over the dense targets (a second allocation of
#: the same shape, which a dense call also streams) and the exp floor.
BASELINE, TARGETS_BASELINE, FLOOR = "baseline", "baseline targets", "floor"
LIMITS = (BASELINE, TARGETS_BASELINE, FLOOR)


def _threading_layer() -> str:
    import numba

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def _cpu_fields() -> dict:
    """CPU model, family/model numbers and vector extensions from ``/proc/cpuinfo`` (Linux)."""
    import platform

    out = dict(cpu=platform.processor() or platform.machine(), family=None, model=None, isa=[])
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        return out
    fields = {}
    for line in text.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    out["cpu"] = fields.get("model name", out["cpu"])
    out["family"] = fields.get("cpu family")
    out["model"] = fields.get("model")
    flags = set(fields.get("flags", "").split())
    out["isa"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw") if f in flags]
    return out


def clock_ghz() -> float:
    """The core clock while busy, estimated from a chain of dependent float64 fused
    multiply-adds (4 cycles each on the x86-64 cores of this decade: Zen 2-5, Skylake to
    Golden Cove).  An estimate for cycles-per-element figures, not a measurement of record."""
    import time

    from numba import njit

    @njit(fastmath={"contract"}, cache=False)
    def chain(n):
        x = 1.0
        for _ in range(n):
            x = x * 0.999999 + 1e-7
        return x

    chain(10)
    n = 50_000_000
    best = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        chain(n)
        best = min(best, time.perf_counter() - t0)
    return 4 * n / best / 1e9


def machine_info() -> dict:
    import os
    import platform

    import llvmlite.binding as llvm
    import numba

    return dict(
        **_cpu_fields(),
        llvm_cpu=llvm.get_host_cpu_name(),
        vector_bits=exp_vector_bits(),
        ghz=clock_ghz(),
        cores=os.cpu_count(),
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
    )


def cpu_line(m: dict) -> str:
    """One line naming the CPU as a report records it."""
    what = m["cpu"]
    if m.get("family"):
        what += f" (family {m['family']}, model {m['model']})"
    extra = []
    if m.get("llvm_cpu"):
        extra.append(f"LLVM: {m['llvm_cpu']}")
    if m.get("vector_bits"):
        extra.append(f"{m['vector_bits']}-bit vectors")
    if m.get("isa"):
        extra.append("/".join(m["isa"]))
    if m.get("ghz"):
        extra.append(f"~{m['ghz']:.2f} GHz busy")
    return what + (f" [{', '.join(extra)}]" if extra else "")


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
        if r["impl"].startswith("xent") or r["loss"] in LIMITS:
            continue
        mine = by.get(("xent sparse" if r["loss"] == "sparse" else "xent categorical") + suffix)
        if mine:
            out[f"vs {r['impl']}"] = r["ms"] / mine["ms"]
    return out


def _pct(v) -> str:
    return "" if v is None else f"{v:.0f}%"


def cycles_per_element(report: dict, entry: dict, ms: float) -> float | None:
    """Core cycles per element per thread at ``ms`` for the case of ``entry`` (at the
    report's estimated busy clock)."""
    ghz = report["machine"].get("ghz")
    n = entry["case"]["rows"] * entry["case"]["classes"]
    if not ghz or not n:
        return None
    return ms * 1e-3 * ghz * 1e9 * report["threads"] / n


def format_table(report: dict) -> str:
    """A plain-text (Markdown) table of a :func:`run` report."""
    lines = []
    m = report["machine"]
    lines.append(
        f"{cpu_line(m)}, {m['cores']} cores; numba {m['numba']}, "
        f"{report['threads']} threads ({report['threading_layer']})"
    )
    for entry in report["results"]:
        lines.append("")
        lines.append(f"### {entry['label']}")
        rows = entry["results"]
        base = next((r for r in rows if r["loss"] == BASELINE), None)
        floor = next((r for r in rows if r["loss"] == FLOOR), None)
        targets = next((r for r in rows if r["loss"] == TARGETS_BASELINE), None)
        limits = []
        if base:
            limits.append(f"memory: {base['impl']} {base['ms']:.2f} ms ({base['gbps']:.1f} GB/s)")
        if targets:
            limits.append(f"{targets['impl']} {targets['ms']:.2f} ms ({targets['gbps']:.1f} GB/s)")
        if floor:
            cpe = cycles_per_element(report, entry, floor["ms"])
            what = f", {cpe:.2f} cycles per element per core" if cpe else ""
            limits.append(f"exp: exp floor {floor['ms']:.2f} ms{what}")
        if limits:
            lines.append("limits: " + "; ".join(limits))
        lines.append("")
        lines.append(
            "| implementation | ms | p20-p80 ms | GB/s | % of memory limit | % of exp floor "
            "| binding limit: reached | extra MiB | correct |"
        )
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|:-:|")
        for r in rows:
            if r["loss"] in LIMITS:
                continue
            mib = r.get("peak_extra_mib")
            mib = "n/a" if mib is None else f"{mib:.1f}"
            p = r.get("ms_percentiles") or {"p20": r["ms"], "p80": r["ms"]}
            lim = f"{r['limit']}: {r['pct_of_limit']:.0f}%" if r.get("limit") else ""
            lines.append(
                f"| {r['impl']} | {r['ms']:.2f} | {p['p20']:.2f}-{p['p80']:.2f} | "
                f"{r['gbps']:.1f} | {_pct(r.get('pct_of_baseline'))} | "
                f"{_pct(r.get('pct_of_exp_floor'))} | {lim} | {mib} | "
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
        "ms: median; p20-p80: the 20th and 80th percentiles of the timed calls. % of memory "
        "limit: the memory baseline's time for the bytes the call must move over the call's time "
        "(row sum; read-write for fwd+bwd; dense: the logits at the logits' row-sum speed plus "
        "the targets at the targets' own, a separate allocation). % of exp floor: the exp floor's "
        "time over the call's (one vectorised exp per element from cache, no memory traffic; "
        "logits only). Binding limit: the larger of the two limit times, and the fraction of it "
        "reached. extra MiB: peak NumPy allocation during one call beyond the inputs "
        "(tracemalloc; n/a for peers that allocate outside NumPy)."
    )
    return "\n".join(lines)


#: Bar colours per provider (the first word of an implementation's name).
_COLOURS = {"xent": "tab:blue", "torch": "tab:orange", "torch.compile": "tab:red",
            "jax": "tab:green", "keras": "tab:purple", "numpy": "tab:gray"}  # fmt: skip


def plot(report: dict, path: str) -> None:
    """Time per implementation (log scale, shorter is faster) for each case, one panel per
    case, with the case's memory limit (row sum, dashed) and exp floor (dotted) as lines and
    each bar's own binding limit as a black tick; the CPU and threads in the title."""
    from xent._eval_plot import require_matplotlib

    require_matplotlib("xent bench")
    import matplotlib.pyplot as plt

    entries = report["results"]
    cols = min(3, max(1, len(entries)))
    nrows = -(-len(entries) // cols)
    heights = [sum(r["loss"] not in LIMITS for r in e["results"]) for e in entries]
    fig, axes = plt.subplots(
        nrows,
        cols,
        figsize=(5.2 * cols, 0.8 + nrows * (0.9 + 0.28 * max(heights, default=1))),
        squeeze=False,
    )
    for ax, entry in zip(axes.flat, entries):
        rows = [r for r in entry["results"] if r["loss"] not in LIMITS]
        rows.sort(key=lambda r: r["ms"], reverse=True)
        y = np.arange(len(rows))
        colours = [_COLOURS.get(r["impl"].split()[0], "tab:brown") for r in rows]
        ax.barh(y, [r["ms"] for r in rows], color=colours, height=0.7)
        ax.set_xscale("log")
        ax.set_yticks(y)
        ax.set_yticklabels([r["impl"] for r in rows], fontsize=7)
        for k, r in enumerate(rows):
            ax.text(r["ms"], k, f" {r['ms']:.3g} ms", va="center", fontsize=6.5)
            if r.get("limit"):  # this bar's own binding limit (dense: both arrays' bytes)
                at = r["ms"] * r["pct_of_limit"] / 100.0
                ax.plot([at, at], [k - 0.4, k + 0.4], color="black", lw=1.5)
        base = next((r for r in entry["results"] if r["loss"] == BASELINE), None)
        floor = next((r for r in entry["results"] if r["loss"] == FLOOR), None)
        marks = []
        targets = next((r for r in entry["results"] if r["loss"] == TARGETS_BASELINE), None)
        if base:
            ax.axvline(base["ms"], color="black", ls="--", lw=0.9)
            marks.append(f"memory {base['ms']:.3g} ms (dashed)")
        if targets:  # dense calls' ticks add this to the logits' time
            marks.append(f"targets {targets['ms']:.3g} ms")
        if floor and entry["case"]["inputs"] == "logits":
            ax.axvline(floor["ms"], color="crimson", ls=":", lw=1.2)
            marks.append(f"exp floor {floor['ms']:.3g} ms (dotted)")
        longest = max([r["ms"] for r in entry["results"]], default=1.0)
        shortest = min([r["ms"] for r in entry["results"]], default=1.0)
        ax.set_xlim(shortest / 2, longest * 6)  # room for the labels right of the bars
        ax.set_title(entry["label"] + "\n" + ", ".join(marks), fontsize=8)
        ax.set_xlabel("ms per call (log scale; shorter is faster)", fontsize=7)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(entries) :]:
        ax.set_visible(False)
    m = report["machine"]
    fig.suptitle(
        f"{cpu_line(m)}\n{report['threads']} threads ({report['threading_layer']}), "
        f"numba {m['numba']}; black tick: the bar's binding limit (memory or exp)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
