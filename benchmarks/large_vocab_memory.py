"""Peak extra memory of the large-vocabulary options on 8,192 x 128,000 logits.

Run: ``python benchmarks/large_vocab_memory.py [--dtype bfloat16] [--readme README.md]``.
Needs ~9 GiB of RAM in float32 (logits and dense targets), half that in 16 bits.  Peak
resident memory is read from the kernel's high-water mark (``VmHWM``), reset just before each
call through ``/proc/self/clear_refs``, so the figure is the call's own peak above the inputs.
With ``--readme`` the table replaces the text between ``<!-- large-vocab-memory -->`` markers
(``<!-- large-vocab-memory-bfloat16 -->`` and so on for 16-bit logits); nothing in it is
typed by hand.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _readme import splice

import xent
from xent._bench_report import machine_info
from xent.bench import _to_bfloat16

N, C = 8192, 128_000


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def peak_extra(call) -> tuple[float, float]:
    """``(seconds, peak resident bytes above the resident size before the call)``."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current resident size
    before = _status("VmRSS")
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    return seconds, _status("VmHWM") - before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", help="README to update between the markers")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)

    def convert(x):
        if args.dtype == "bfloat16":
            return _to_bfloat16(x)
        return x.astype(args.dtype)

    z = None
    for i in range(0, N, 256):
        block = convert(rng.standard_normal((256, C), np.float32) * 4)
        if z is None:
            z = np.empty((N, C), block.dtype)
        z[i : i + 256] = block
    y = rng.integers(0, C, N)
    t = np.zeros((N, C), z.dtype)
    t[np.arange(N), y] = convert(np.ones(1, np.float32))[0]
    w = np.ones(C)
    cases = [
        ("sparse (`cross_entropy`, index targets)", lambda: xent.cross_entropy(z, y)),
        (
            "+ `z_loss`, `return_lse`",
            lambda: xent.cross_entropy(z, y, z_loss=1e-4, return_lse=True),
        ),
        (
            "+ `softcap=30`, `z_loss`, `return_lse`",
            lambda: xent.cross_entropy(z, y, softcap=30.0, z_loss=1e-4, return_lse=True),
        ),
        (
            "+ `weight`, `label_smoothing=0.1`",
            lambda: xent.cross_entropy(z, y, weight=w, label_smoothing=0.1),
        ),
        ("dense (`cross_entropy`, probability targets)", lambda: xent.cross_entropy(z, t)),
        (
            "+ `softcap=30`, `z_loss`, `return_lse`",
            lambda: xent.cross_entropy(z, t, softcap=30.0, z_loss=1e-4, return_lse=True),
        ),
    ]
    lines = [
        f"Measured by `python benchmarks/large_vocab_memory.py --dtype {args.dtype}` ({N:,} x "
        f"{C:,} {args.dtype} logits, {z.nbytes / 2**30:.1f} GiB; {machine_info()['cpu']}, "
        f"{xent.get_num_threads()} threads; second call, compiled):",
        "",
        "| call | time | peak extra memory |",
        "|---|---:|---:|",
    ]
    for name, call in cases:
        call()  # compile and warm
        seconds, extra = peak_extra(call)
        lines.append(f"| {name} | {seconds * 1e3:.0f} ms | {extra / 2**20:.1f} MiB |")
        print(lines[-1], flush=True)
    lines.append("")
    lines.append(
        f"For comparison, one float32 N×C temporary would be {N * C * 4 / 2**20:,.0f} MiB; "
        f"the outputs themselves are {N * 4 * 3 / 2**10:.0f} KiB."
    )
    block = "\n".join(lines)
    if args.readme:
        marker = "large-vocab-memory" + ("" if args.dtype == "float32" else f"-{args.dtype}")
        splice(args.readme, f"<!-- {marker} -->", block)
    else:
        print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
