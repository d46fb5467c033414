"""Write the README's benchmark section from a ``xent bench --output FILE.json`` report.

    xent bench --output bench.json && python benchmarks/make_table.py bench.json

Replaces the text between the ``<!-- bench-table -->`` markers in README.md; never edit
that section by hand.
"""

import json
import sys
from pathlib import Path

from xent.bench import format_table

BEGIN, END = "<!-- bench-table:begin -->", "<!-- bench-table:end -->"


def main(argv):
    report = json.loads(Path(argv[1]).read_text())
    readme = Path(argv[2] if len(argv) > 2 else Path(__file__).resolve().parents[1] / "README.md")
    text = readme.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    table = format_table(report)
    readme.write_text(text[:start] + "\n" + table + "\n" + text[stop:])
    print(f"wrote {len(table.splitlines())} lines into {readme}")


if __name__ == "__main__":
    main(sys.argv)
