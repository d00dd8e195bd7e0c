"""Numbers and frames as Markdown text: the one formatting of every report table and interval."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd


def cell(v) -> str:
    """One table cell: numbers to 4 significant digits (scientific when large or small), NaN as n/a."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.3e}" if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3) else f"{v:.4g}"
    return str(v).replace("|", "\\|")


def markdown_table(frame: pd.DataFrame, columns: list[str] | None = None) -> str:
    """A DataFrame as a Markdown table (numbers to 4 significant digits, NaN as n/a)."""
    if frame is None or frame.empty:
        return "_(none)_"
    columns = [c for c in (columns or list(frame.columns)) if c in frame]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame[columns].itertuples(index=False)]
    return "\n".join(lines)


def ci_text(lo: float, hi: float) -> str:
    """An interval to 2 decimals, "[n/a]" when either end is missing."""
    return f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else "[n/a]"


def bullets(lines) -> str:
    return "\n".join(f"- {line}" for line in lines)
