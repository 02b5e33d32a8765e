"""The LaTeX form of a comparison table: a `table` float, booktabs rules, siunitx `S` columns.

Each metric is one `S` column holding `mean \\pm std`: siunitx (3.1 or later)
aligns the decimal points of means and of stds (`table-format` is computed
from the column). Numbers are typeset in text mode with the text series kept,
so `\\bfseries` makes the whole number bold (`\\textbf{$...$}` would not).
siunitx prints no uncertainty when it is zero; the caption says so. Every
option is set per column, so the bare `tabular` works in any document that
loads booktabs and siunitx.
"""

from __future__ import annotations

from ..results.schema import column_name
from .tables import ComparisonTable
from .render import Column, best_rows, columns, format_value, group_cells, header, n_cells, notes, ratio_text

_SPECIAL = str.maketrans({"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                          "\\": r"\textbackslash{}"})
_SI_OPTIONS = "uncertainty-mode=separate, table-align-uncertainty, mode=text, reset-text-series=false"
PREAMBLE = r"\usepackage{booktabs}" + "\n" + r"\usepackage{siunitx}"


def escape(text: str) -> str:
    return str(text).translate(_SPECIAL)


def _tex_text(text: str) -> str:
    """Plain note text with its symbols in math: ±, ≥, ↑, ↓, †, ×."""
    out = escape(text)
    for a, b in (("±", r"$\pm$"), ("≥", r"$\geq$"), ("↑", r"$\uparrow$"), ("↓", r"$\downarrow$"),
                 ("†", r"$^\dagger$"), ("×", r"$\times$")):
        out = out.replace(a, b)
    return out


def _digits(texts: list[str]) -> str:
    """siunitx table-format digits (`3.2`) wide enough for every number in `texts`."""
    numbers = [t.lstrip("-") for t in texts if t and t != "–"]
    if not numbers:
        return "1"
    whole = max(len(t.split(".")[0]) for t in numbers)
    decimals = max(len(t.split(".")[1]) if "." in t else 0 for t in numbers)
    sign = "-" if any(t.startswith("-") for t in texts) else ""
    return f"{sign}{whole}.{decimals}" if decimals else f"{sign}{whole}"


def _metric_column(table: ComparisonTable, m: str, col: Column, best: set[int]) -> tuple[str, list[str]]:
    """(column spec, cells) of one metric."""
    pairs = [format_value(mean, std, col) for mean, std in zip(table.frame[f"{m}_mean"], table.frame[f"{m}_std"])]
    fmt = _digits([a for a, _ in pairs])
    if any(b for _, b in pairs):
        fmt += f"({_digits([b for _, b in pairs])})"
    cells = []
    for i, (a, b) in enumerate(pairs):
        text = "{--}" if a == "–" else f"{a} \\pm {b}" if b else a
        cells.append(f"\\bfseries {text}" if i in best and a != "–" else text)
    return f"S[table-format={fmt}, {_SI_OPTIONS}]", cells


def latex(table: ComparisonTable, caption: str = "", label: str = "", tabular_only: bool = False) -> str:
    """A `table` float (caption above: the user's words, then how the numbers were computed) or the bare tabular."""
    cols, best = columns(table), best_rows(table)
    groups = group_cells(table)
    body = {b: [f"{{{escape(t)}}}" if t.startswith("[") else escape(t) for t in groups[b]] for b in table.by}
    body["n"] = n_cells(table, r"$^\dagger$")
    spec = ["l"] * len(table.by) + ["r"]
    heads = [escape(column_name(b)) for b in table.by] + ["$n$"]
    for m in table.metrics:
        s, body[m] = _metric_column(table, m, cols[m], best[m])
        spec.append(s)
        heads.append("{" + header(cols[m], latex=True) + "}")
    if table.ratio_header:
        body["ratio"] = [_tex_text(ratio_text(table, i)).replace("–", "--") for i in range(len(table.frame))]
        spec.append("r")
        heads.append(escape(table.ratio_header))
    lines = [r"\begin{tabular}{" + "".join(spec) + "}", r"\toprule", " & ".join(heads) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in zip(*body.values())]
    lines += [r"\bottomrule", r"\end{tabular}"]
    note = " ".join(_tex_text(t) for t in notes(table))
    if any((table.frame[f"{m}_std"] == 0).any() for m in table.metrics):
        note += r" A value without $\pm$ had no spread over its trials."
    if tabular_only:
        return "\n".join([f"% {note}", "% needs " + PREAMBLE.replace("\n", " "), *lines]) + "\n"
    text = (caption.strip() + " " if caption.strip() else "") + note  # the caption is the user's LaTeX
    head = [r"\begin{table}[t]", r"\centering", r"\caption{" + text + "}"]
    head += [r"\label{" + label + "}"] if label else []
    return "\n".join([*head, *lines, r"\end{table}"]) + "\n"
