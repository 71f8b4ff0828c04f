"""Result tables of the benchmarks: mean +- std summaries, Markdown and CSV writers.

A table is a list of rows; each row is a ``dict`` mapping a column name to a value (a string,
a number, or a :class:`MeanStd`). Rows may lack columns (written empty).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fuse4seg.io.atomic import atomic_path

__all__ = ["MeanStd", "mean_std", "format_value", "to_markdown", "to_csv", "write_table"]


@dataclass(frozen=True)
class MeanStd:
    """Mean and population standard deviation of ``n`` finite values (NaN when ``n == 0``)."""

    mean: float
    std: float
    n: int

    def format(self, digits: int = 3) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def mean_std(values: Iterable[float]) -> MeanStd:
    """Mean +- std (population, ddof 0) over the finite entries of ``values``.

    Non-finite values (NaN, inf: e.g. HD95 of an empty prediction) are left out; ``n`` counts
    the values used.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return MeanStd(math.nan, math.nan, 0)
    mean = sum(vals) / len(vals)
    var = sum((v - mean) ** 2 for v in vals) / len(vals)
    return MeanStd(mean, math.sqrt(var), len(vals))


def format_value(value: object, digits: int = 3) -> str:
    """Text of one cell: ``MeanStd`` as ``m ± s``, floats with ``digits`` decimals."""
    if value is None:
        return ""
    if isinstance(value, MeanStd):
        return value.format(digits)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def _columns(rows: Sequence[dict], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    cols: list[str] = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


def to_markdown(rows: Sequence[dict], columns: Sequence[str] | None = None, digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, others right-aligned)."""
    cols = _columns(rows, columns)
    if not cols:
        return ""
    lines = ["| " + " | ".join(cols) + " |"]
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|")
    for row in rows:
        cells = [format_value(row.get(c), digits).replace("|", "\\|") for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """CSV text; a ``MeanStd`` cell becomes two columns ``<name>`` (mean) and ``<name>_std``."""
    cols = _columns(rows, columns)
    header: list[str] = []
    for c in cols:
        header.append(c)
        if any(isinstance(r.get(c), MeanStd) for r in rows):
            header.append(f"{c}_std")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        out: list[object] = []
        for c in cols:
            v = row.get(c)
            has_std = any(isinstance(r.get(c), MeanStd) for r in rows)
            if isinstance(v, MeanStd):
                out.extend([repr(v.mean), repr(v.std)])
            elif has_std:
                out.extend(["" if v is None else v, ""])
            elif isinstance(v, float):
                out.append(repr(v))
            else:
                out.append("" if v is None else v)
        writer.writerow(out)
    return buf.getvalue()


def write_table(
    rows: Sequence[dict],
    stem: str | Path,
    columns: Sequence[str] | None = None,
    title: str | None = None,
    digits: int = 3,
) -> tuple[Path, Path]:
    """Write ``<stem>.md`` and ``<stem>.csv`` atomically; returns both paths."""
    stem = Path(stem)
    md_path, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    md = to_markdown(rows, columns, digits)
    if title:
        md = f"## {title}\n\n{md}"
    with atomic_path(md_path) as tmp:
        tmp.write_text(md)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(to_csv(rows, columns))
    return md_path, csv_path
