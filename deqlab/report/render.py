"""Rendering a `ComparisonTable` (deqlab/report/tables.py) as a paper table, a Markdown table or CSV.

What a reviewer sees, the same in every format:

- display names (`SkipRegDEQ`, `Newton-Krylov`; headers `Init`, `Solver`) from deqlab/results/schema.py;
- one precision per column: the decimals of the std's first significant digit
  (two when it is 1), the finest over the column's rows, at most four
  significant digits of the column's median; without any spread, three
  significant digits of the median;
- times in s, ms or µs, chosen so the column's median is at least 1; a column
  of tiny or huge numbers (residuals) gets one power of ten in its header,
  never mixed scientific and plain notation;
- the best mean of each column in bold, among rows with at least `min_n`
  trials (three, or fewer when no row has three); rows with fewer are marked †;
  no bold when fewer than two rows qualify, or when they all tie;
- a note (the LaTeX caption, lines under the Markdown table) that says all of this.

LaTeX is a `table` float with `\\caption`/`\\label` (or the bare `tabular`
with `tabular_only`), booktabs rules and siunitx `S` columns: values align on
the decimal point and bold works inside siunitx's math typesetting.
Preamble: `\\usepackage{booktabs}` and `\\usepackage{siunitx}`.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd

from ..results.schema import column_name, printable, value_name
from .tables import FORMATS, ComparisonTable

TIME_UNITS = (("s", 1.0), ("ms", 1e3), ("µs", 1e6))
_ARROW = {"max": "↑", "min": "↓"}
_CSV_SUFFIX = {"%": "pct", "s": "s"}


@dataclass(frozen=True)
class Column:
    """How one metric column is shown: raw value x `factor` / 10**`exponent`, with `decimals` digits."""

    label: str
    unit: str
    factor: float
    exponent: int
    decimals: int
    mode: Optional[str]


def column_format(label: str, unit: str, scale: float, mode: Optional[str], means, stds) -> Column:
    """Pick unit, power of ten and decimals for a whole column (see the module notes)."""
    means, stds = np.asarray(means, float), np.asarray(stds, float)
    finite = np.abs(means[np.isfinite(means)])
    median = float(np.median(finite)) if finite.size else 1.0
    factor, exponent = scale, 0
    if unit == "s":
        for unit, factor in TIME_UNITS:
            if median * factor >= 1 or unit == TIME_UNITS[-1][0]:
                break
    elif not unit and median > 0 and (median < 1e-2 or median >= 1e5):
        exponent = math.floor(math.log10(median))
    shown = factor / 10.0 ** exponent
    median *= shown
    spread = stds[np.isfinite(stds) & (stds > 0)] * shown
    cap = max(0, 3 - _magnitude(median))
    if spread.size:
        decimals = max(max(0, (2 if f"{s:.1e}".startswith("1") else 1) - 1 - _magnitude(s)) for s in spread)
        decimals = min(decimals, cap)
    else:
        decimals = max(0, 2 - _magnitude(median))
    return Column(label, unit, factor, exponent, decimals, mode)


def _magnitude(x: float) -> int:
    return math.floor(math.log10(abs(x))) if x else 0


def format_value(mean: float, std: float, column: Column) -> tuple[str, str]:
    """(mean, std) as text in the column's units and decimals; std is "" for one trial, "–" for no mean."""
    if mean is None or not math.isfinite(mean):
        return "–", ""
    shown = column.factor / 10.0 ** column.exponent
    d = column.decimals
    std_text = f"{std * shown:.{d}f}" if std is not None and math.isfinite(std) else ""
    return f"{mean * shown:.{d}f}", std_text


def columns(table: ComparisonTable) -> dict[str, Column]:
    f = table.frame
    return {m: column_format(table.info[m].label, table.info[m].unit, table.info[m].scale, table.info[m].mode,
                             f[f"{m}_mean"], f[f"{m}_std"]) for m in table.metrics}


def best_rows(table: ComparisonTable) -> dict[str, set[int]]:
    """Rows holding each column's best mean, among rows with at least `table.min_n` trials."""
    eligible = table.frame["n"].to_numpy() >= table.min_n
    if eligible.sum() < 2:  # best of one row says nothing
        eligible[:] = False
    best = {}
    for m in table.metrics:
        mode = table.info[m].mode
        means = np.where(eligible, table.frame[f"{m}_mean"].to_numpy(dtype=float), np.nan)
        if mode is None or not np.isfinite(means).any():
            best[m] = set()
            continue
        target = np.nanmax(means) if mode == "max" else np.nanmin(means)
        tied = set(np.flatnonzero(means == target).tolist())
        best[m] = set() if len(tied) == np.isfinite(means).sum() > 1 else tied  # all equal: nothing stands out
    return best


def header(column: Column, latex: bool = False) -> str:
    unit = column.unit.replace("%", r"\%").replace("µs", r"\si{\micro\second}") if latex else column.unit
    power = (rf"$\times 10^{{{column.exponent}}}$" if latex else f"×1e{column.exponent}") if column.exponent else ""
    inside = ", ".join(p for p in (power, unit) if p)
    arrow = (rf"$\{'uparrow' if column.mode == 'max' else 'downarrow'}$" if latex else _ARROW[column.mode]) \
        if column.mode else ""
    return " ".join(p for p in (column.label, f"({inside})" if inside else "", arrow) if p)


def ratio_text(table: ComparisonTable, i: int) -> str:
    f = table.frame
    r, lo, hi = (float(f.loc[i, c]) for c in ("ratio", "ratio_lo", "ratio_hi"))
    if not math.isfinite(r):
        return "–"
    return f"{r:.2f}×" + (f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) else "")


def notes(table: ComparisonTable) -> list[str]:
    """The sentences of the caption: what the numbers are, how best is chosen, how the ratio was computed."""
    out = ["Mean ± std over n trials (final epoch of completed trials)."]
    some = [column_name(b) for b in table.by if b in table.binned]
    if some:
        out.append(f"{', '.join(some)} grouped in bins.")
    if any(table.info[m].mode for m in table.metrics):
        rule = f" among rows with n ≥ {table.min_n}; † marks rows with fewer trials" if table.min_n > 1 else ""
        out.append(f"Bold: best mean per column (↑ higher, ↓ lower is better){rule}.")
    if table.ratio_kind:
        order = "baseline / row" if table.info[table.ratio_metric].mode == "min" else "row / baseline"
        what = f"{table.ratio_header}: {order} of mean {table.info[table.ratio_metric].label.lower()}"
        if table.paired is None:
            out.append(f"{what}.")
        else:
            how = "paired by seed" if table.paired else "seeds resampled per group"
            out.append(f"{what}; in brackets its 95% bootstrap interval over seeds ({how}, 2000 resamples).")
    return out


# --------------------------------------------------------------------------- formats


def render_table(table: ComparisonTable, fmt: str, caption: str = "", label: str = "",
                 tabular_only: bool = False) -> str:
    """The table as LaTeX, Markdown or CSV text (caption/label/tabular_only apply to LaTeX)."""
    if fmt == "latex":
        from .latex import latex

        return latex(table, caption=caption, label=label, tabular_only=tabular_only)
    if fmt == "markdown":
        return markdown(table)
    if fmt == "csv":
        return csv(table)
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


_MARKDOWN_ACTIVE = re.compile(r"([\\`*_\[\]<>|~$!#&])")
_BLOCK_START = re.compile(r"^(\d*)([-+.)=])")


def markdown_text(value, cell: bool = False) -> str:
    """A value from results as literal Markdown text: each character that could start a link, an image,
    emphasis, code, HTML, an entity, a heading, math, a Streamlit `:colour[...]` or a new table cell is
    backslash-escaped (CommonMark renders it as itself: `![x](http://...)` stays text and fetches nothing),
    and control characters are escaped as in the terminal (`printable`), so the text is one line. A start that
    Markdown reads as a block (`- `, `+ `, `1. `, `---`, four spaces of code) is escaped or dropped too,
    except in a table `cell`, where no block starts (a negative number stays `-0.5`)."""
    text = _MARKDOWN_ACTIVE.sub(r"\\\1", printable(value))
    return text if cell else _BLOCK_START.sub(r"\1\\\2", text.lstrip(" "), count=1)


def group_cells(table: ComparisonTable) -> dict[str, list[str]]:
    return {b: [value_name(b, v) for v in table.frame[b]] for b in table.by}


def n_cells(table: ComparisonTable, dagger: str) -> list[str]:
    return [f"{int(n)}{dagger if n < table.min_n else ''}" for n in table.frame["n"]]


def markdown(table: ComparisonTable) -> str:
    cols, best = columns(table), best_rows(table)
    cells = {**{b: [markdown_text(c, cell=True) for c in cs] for b, cs in group_cells(table).items()},
             "n": n_cells(table, "†")}
    for m in table.metrics:
        texts = []
        for i, (mean, std) in enumerate(zip(table.frame[f"{m}_mean"], table.frame[f"{m}_std"])):
            a, b = format_value(mean, std, cols[m])
            text = f"{a} ± {b}" if b else a
            texts.append(f"**{text}**" if i in best[m] else text)
        cells[m] = texts
    headers = [markdown_text(column_name(b), cell=True) for b in table.by] + ["n"] + [header(cols[m]) for m in table.metrics]
    if table.ratio_header:
        cells["ratio"] = [ratio_text(table, i) for i in range(len(table.frame))]
        headers.append(table.ratio_header)
    numeric = [False] * len(table.by) + [True] * (len(headers) - len(table.by))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if r else ":---" for r in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in zip(*cells.values())]
    return "\n".join(lines) + "\n\n" + " ".join(notes(table)) + "\n"


def csv(table: ComparisonTable) -> str:
    """Machine names and every digit that matters (6 significant), in plain columns for further analysis."""
    f = table.frame
    out = pd.DataFrame({b: [f"{v:g}" if isinstance(v, float) else printable(v) for v in f[b]] for b in table.by})
    out["n"] = f["n"].astype(int).to_numpy()
    for m in table.metrics:
        info = table.info[m]
        suffix = _CSV_SUFFIX.get(info.unit, info.unit)
        stem = m + (f"_{suffix}" if info.unit and not m.endswith(f"_{info.unit}") else "")
        out[f"{stem}_mean"] = f[f"{m}_mean"].to_numpy(dtype=float) * info.scale
        out[f"{stem}_std"] = f[f"{m}_std"].to_numpy(dtype=float) * info.scale
    if table.ratio_header:
        name = f"{table.ratio_metric}_{table.ratio_kind}_vs_" + "_".join(f"{k}={v}" for k, v in table.baseline.items())
        for suffix, col in (("", "ratio"), ("_ci_low", "ratio_lo"), ("_ci_high", "ratio_hi")):
            out[name + suffix] = f[col].to_numpy(dtype=float)
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()
