"""BENCHMARKS.md: markdown tables, and result sections that a new run of the same benchmark on
the same kind of machine replaces, leaving every other section and hand-written text as it is.

The results live between `RESULTS_BEGIN` and `RESULTS_END`; each section is delimited by
`<!-- bench:KEY -->` and `<!-- /bench -->`, where KEY is `BENCHMARK:MACHINE-KIND:SCALE`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

RESULTS_BEGIN = "<!-- bench results: begin -->"
RESULTS_END = "<!-- bench results: end -->"
SECTION_END = "<!-- /bench -->"
# what a missing file starts as
SKELETON = f"# Benchmarks\n\n## Results\n\n{RESULTS_BEGIN}\n{RESULTS_END}\n"

MISSING = "—"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table; `|` inside a cell is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), line("---" for _ in headers), *map(line, rows)])


def update(path: Path, key: str, body: str) -> None:
    """Put `body` into the section `key` of the markdown file at `path`: in place of the
    section's old text when there is one, else at the end of the results. A missing file is
    created; a file without the results markers gets them appended."""
    text = path.read_text(encoding="utf-8") if path.exists() else SKELETON
    if RESULTS_BEGIN not in text or RESULTS_END not in text:
        text = text.rstrip("\n") + f"\n\n{RESULTS_BEGIN}\n{RESULTS_END}\n"
    start = f"<!-- bench:{key} -->"
    block = f"{start}\n{body.strip()}\n{SECTION_END}"
    old = re.compile(re.escape(start) + ".*?" + re.escape(SECTION_END), re.DOTALL)
    if old.search(text):
        text = old.sub(lambda _: block, text, count=1)
    else:
        text = text.replace(RESULTS_END, f"{block}\n\n{RESULTS_END}", 1)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)  # a crash never leaves a half-written file


def seconds(value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def count(value: float | None) -> str:
    return MISSING if value is None else f"{value:,.0f}"


def ratio(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def accuracy(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def mebibytes(value: int | None) -> str:
    return MISSING if value is None else f"{value / 2**20:,.0f} MiB"
