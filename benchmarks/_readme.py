"""Write a generated block into README.md between a pair of identical HTML-comment markers
(shared by the scripts that regenerate README sections; nothing there is typed by hand)."""

from __future__ import annotations

import os
import re


def splice(readme: str, marker: str, block: str) -> None:
    """Replace the text between two ``marker`` lines (or fill a lone marker) with ``block``."""
    with open(readme) as f:
        text = f.read()
    new = f"{marker}\n{block}\n{marker}"
    pattern = re.compile(re.escape(marker) + r".*?" + re.escape(marker), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: new, text)
    elif text.count(marker) == 1:
        text = text.replace(marker, new)
    else:
        raise SystemExit(f"{readme}: marker {marker} not found")
    with open(readme + ".tmp", "w") as f:
        f.write(text)
    os.replace(readme + ".tmp", readme)
