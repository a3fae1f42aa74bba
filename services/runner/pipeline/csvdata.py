"""The user's own OHLCV files: ``<SYMBOL>.csv`` in one folder, checked line by line."""

from __future__ import annotations

import csv
import math
from datetime import date
from pathlib import Path

from services.runner.pipeline.base import PipelineError
from shared.results import PriceSeries

COLUMNS = ("date", "open", "high", "low", "close", "volume")


def symbol_path(folder: Path, symbol: str) -> Path:
    """The file for ``symbol``; a name that would leave the folder is refused."""
    root = folder.resolve()
    path = (root / f"{symbol}.csv").resolve()
    if path.parent != root or "/" in symbol or "\\" in symbol or symbol.startswith("."):
        raise PipelineError("invalid_symbol", f"symbol {symbol!r} does not name a file in the CSV folder")
    return path


def find(folder: Path, symbol: str) -> Path:
    """``<SYMBOL>.csv``, else a file whose name matches it ignoring case (it may not exist)."""
    path = symbol_path(folder, symbol)
    if path.is_file() or not folder.is_dir():
        return path
    wanted = path.name.lower()
    return next((p for p in sorted(folder.iterdir()) if p.name.lower() == wanted and p.is_file()), path)


def _columns(header: list[str], name: str) -> dict[str, int]:
    lowered = [h.strip().lower() for h in header]
    missing = [c for c in COLUMNS if c not in lowered]
    if missing:
        raise PipelineError("bad_data", f"{name} line 1: missing column(s) {', '.join(missing)}")
    return {c: lowered.index(c) for c in COLUMNS}


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text.replace(",", "")) if text.strip() else math.nan
    except ValueError:
        raise PipelineError("bad_data", f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise PipelineError("bad_data", f"{where}: {column} {text!r} is not a non-negative number")
    return value


def _day(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise PipelineError("bad_data", f"{where}: date {text!r} is not YYYY-MM-DD") from None


class _Rows:
    def __init__(self) -> None:
        self.days: list[date] = []
        self.cols: dict[str, list[float]] = {c: [] for c in COLUMNS[1:]}

    def add(self, row: list[str], index: dict[str, int], where: str) -> None:
        if len(row) <= max(index.values()):
            raise PipelineError(
                "bad_data", f"{where}: expected {max(index.values()) + 1} fields, got {len(row)}"
            )
        day = _day(row[index["date"]], where)
        if self.days and day <= self.days[-1]:
            raise PipelineError("bad_data", f"{where}: date {day} is not after {self.days[-1]}")
        bar = {c: _number(row[index[c]], c, where) for c in COLUMNS[1:]}
        if bar["high"] < bar["low"] or bar["close"] <= 0:
            raise PipelineError("bad_data", f"{where}: high below low or close not positive")
        self.days.append(day)
        for c, v in bar.items():
            self.cols[c].append(v)


def read_prices(path: Path, end: date, lookback_days: int) -> PriceSeries:
    """Bars up to ``end`` within ``lookback_days`` of the last one; errors name file and line."""
    if not path.is_file():
        raise PipelineError("unknown_symbol", f"no CSV file {path.name} in the CSV folder")
    try:
        rows = _parse(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PipelineError("bad_data", f"{path.name}: not a readable UTF-8 CSV file ({exc})") from exc
    except OSError as exc:
        raise PipelineError("data_unavailable", f"{path.name}: {exc.strerror}", transient=True) from exc
    return _window(rows, end, lookback_days, path.name)


def _parse(path: Path) -> _Rows:
    rows = _Rows()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise PipelineError("bad_data", f"{path.name} line 1: the file is empty")
        index = _columns(header, path.name)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                rows.add(row, index, f"{path.name} line {reader.line_num}")
    return rows


def _window(rows: _Rows, end: date, lookback_days: int, name: str) -> PriceSeries:
    keep = [i for i, d in enumerate(rows.days) if d <= end]
    if keep:
        last = rows.days[keep[-1]]
        keep = [i for i in keep if (last - rows.days[i]).days <= lookback_days]
    if len(keep) < 2:
        raise PipelineError("insufficient_data", f"{name}: fewer than 2 bars up to {end}")
    return PriceSeries(
        dates=[rows.days[i].isoformat() for i in keep],
        **{c: [rows.cols[c][i] for i in keep] for c in COLUMNS[1:]},
    )
