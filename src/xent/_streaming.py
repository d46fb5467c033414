"""Streaming helpers for row-block passes over large inputs: pages of processed blocks of a
memory map released as the pass goes, and a progress display."""

from __future__ import annotations

import mmap
import sys
import time

import numpy as np


# ------------------------------------------------------------------ memory maps
def _mmap_of(arr):
    """The ``mmap`` behind a NumPy array (``np.memmap`` or a view of one), else ``None``."""
    a = arr
    while a is not None:
        mm = getattr(a, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm
        a = a.base if isinstance(a, np.ndarray) else (a if isinstance(a, mmap.mmap) else None)
        if isinstance(a, mmap.mmap):
            return a
    return None


class PageRelease:
    """Drops the pages of processed blocks of a memory-mapped array from this process
    (``MADV_DONTNEED``; the data stays in the OS page cache), so resident memory stays
    bounded by the block size however large the file is."""

    def __init__(self, arr):
        self.mm = _mmap_of(arr)
        self.ok = (
            self.mm is not None and hasattr(self.mm, "madvise") and hasattr(mmap, "MADV_DONTNEED")
        )
        if self.ok:
            self.base = np.frombuffer(self.mm, np.uint8).__array_interface__["data"][0]
            self.size = len(self.mm)

    def release(self, block):
        if not self.ok or block.size == 0:
            return
        start = block.__array_interface__["data"][0] - self.base
        end = start + block.nbytes
        start = (start // mmap.PAGESIZE) * mmap.PAGESIZE
        end = min(self.size, end)
        if 0 <= start < end:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                self.ok = False


# ------------------------------------------------------------------ progress
class Progress:
    def __init__(self, total_rows, bytes_per_row, enabled):
        self.enabled = enabled
        self.bytes_per_row = bytes_per_row
        self.start = time.perf_counter()
        self.done = 0
        self.bar = None
        if not enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(
                total=total_rows, unit="rows", unit_scale=True, desc="xent eval", file=sys.stderr
            )
        self.total = total_rows

    def update(self, rows):
        if not self.enabled:
            return
        self.done += rows
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        gbps = self.done * self.bytes_per_row / elapsed / 1e9
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix_str(f"{gbps:.1f} GB/s", refresh=False)
        else:
            pct = 100.0 * self.done / max(self.total, 1)
            print(
                f"\rxent eval: {self.done:,}/{self.total:,} rows ({pct:5.1f}%), "
                f"{self.done / elapsed:,.0f} rows/s, {gbps:.1f} GB/s",
                end="",
                file=sys.stderr,
            )

    def close(self):
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        else:
            print(file=sys.stderr)
