"""The one table: as text for the terminal, Markdown for docs/benchmarks.md, and JSON."""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Row

DASH = "\u2013"
HEADERS = ("row", "figure", f"median [min{DASH}max]", "n", "goal", "holds?")


def number(value: float) -> str:
    """Readable at a glance: 12,345 / 123 / 12.3 / 1.23 / 0.0123."""
    if math.isnan(value):
        return "nan"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(row: Row) -> str:
    s = row.summary()
    if s is None:
        return row.note or "not measured"
    lo, mid, hi = s
    figure = f"{number(mid)} [{number(lo)}{DASH}{number(hi)}] {row.unit}".rstrip()
    return f"{figure} ({row.note})" if row.note else figure


def verdict(row: Row) -> str:
    if row.holds is None:
        return "—" if not row.goal else "?"
    return "yes" if row.holds else "NO"


def cells(row: Row) -> tuple[str, ...]:
    return (row.row, row.figure, cell(row), str(len(row.values)), row.goal or "—", verdict(row))


def text_table(rows: Sequence[Row]) -> str:
    table = [HEADERS, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    out = []
    for i, line in enumerate(table):
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: Sequence[Row]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in rows]
    return "\n".join(out)


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }


def write(rows: Sequence[Row], out_dir: Path, meta: dict[str, Any]) -> tuple[Path, Path]:
    """bench/results/latest.json and latest.md; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **meta,
        "rows": [r.as_dict() for r in rows],
    }
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md_path.write_text(
        f"Taken {doc['taken_at']} on {doc['machine']['cpus']} CPUs "
        f"(load average at the end {doc['machine']['load_avg']}), "
        f"{meta.get('elapsed_s', 0):.0f} s in all{' — QUICK mode' if meta.get('quick') else ''}.\n\n"
        + markdown_table(rows)
        + "\n"
    )
    return json_path, md_path
