"""Comparison tables for papers and READMEs: aggregate trials, render LaTeX, Markdown or CSV.

Two verbs, shared by `deqlab export`, the dashboard's Compare and Export pages
and the end-of-study table of `deqlab run`:

    table = aggregate(trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"],
                      baseline={"init": "zeros"})
    print(render(table, "markdown"))        # or "latex" (booktabs, via pandas Styler) or "csv"

`aggregate` takes the trials frame of `deqlab.results.load` (one row per
epoch), keeps the final epoch of every completed trial, groups by the chosen
hyperparameters and returns a `ComparisonTable` (mean, std and n per group,
plus an optional ratio against a baseline row). `render` formats it:

- values are mean ± std (std only when n > 1), rounded to the std's first
  significant digit (two when that digit is 1), or to three significant digits
  when there is no spread; magnitudes below 1e-3 are written in scientific form;
- the best mean of each column is bold (LaTeX and Markdown), "best" meaning
  the metric's direction: `METRICS` knows the built-in ones, a study's
  `objectives` (or the `modes` argument) give the others, and a column with
  no known direction gets no bold;
- headers carry units; accuracies and fractions are shown in percent;
- CSV keeps every digit that matters (6 significant) in plain columns
  (`test_acc_pct_mean`, `test_acc_pct_std`, ...) for further analysis.

Names resolve to columns the same way everywhere (`resolve_column`): the exact
column, else `param.<name>`, else the one `param.*` column ending in
`.<name>` (so `init` finds `param.deq.init`); an unknown or ambiguous name is a
ValueError that lists what is available.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from .results import PROVENANCE

FORMATS = ("latex", "markdown", "csv")
MODES = ("max", "min")


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, unit, display scale, and which direction is better."""

    label: str
    unit: str = ""
    scale: float = 1.0
    mode: Optional[str] = None  # "max", "min", or None when no direction is known


METRICS: dict[str, MetricInfo] = {
    "test_acc": MetricInfo("Test acc.", "%", 100.0, "max"),
    "train_loss": MetricInfo("Train loss", "", 1.0, "min"),
    "test_loss": MetricInfo("Test loss", "", 1.0, "min"),
    "nfe_fwd": MetricInfo("NFE fwd", "", 1.0, "min"),
    "nfe_bwd": MetricInfo("NFE bwd", "", 1.0, "min"),
    "train_nfe_fwd": MetricInfo("Train NFE fwd", "", 1.0, "min"),
    "nfe_jac": MetricInfo("NFE Jac. reg.", "", 1.0, "min"),
    "nfe_train_total": MetricInfo("Train NFE total", "", 1.0, "min"),
    "nfe_test_total": MetricInfo("Test NFE total", "", 1.0, "min"),
    "nfe_fwd_paper": MetricInfo("NFE fwd (paper)", "", 1.0, "min"),
    "fwd_time_s": MetricInfo("Fwd time", "s", 1.0, "min"),
    "bwd_time_s": MetricInfo("Bwd time", "s", 1.0, "min"),
    "epoch_time_s": MetricInfo("Epoch time", "s", 1.0, "min"),
    "total_time_s": MetricInfo("Train time", "s", 1.0, "min"),
    "infer_time_s": MetricInfo("Inference time", "s", 1.0, "min"),
    "converged_frac": MetricInfo("Converged", "%", 100.0, "max"),
    "residual": MetricInfo("Residual", "", 1.0, "min"),
}
_UNIT_SUFFIX = {"%": "pct", "s": "s"}
# Columns that are never metrics: identity, bookkeeping and provenance.
_NOT_METRICS = {"study", "trial_id", "epoch", "epochs", "status", "phase", *PROVENANCE}


@dataclass(frozen=True)
class ComparisonTable:
    """The aggregated comparison, in raw units (accuracy as a fraction, times in seconds).

    `frame` has one row per group, in sorted group order, with the group
    columns named as the user wrote them (`by`), `n`, then `<metric>_mean` and
    `<metric>_std` for each metric, and `ratio` when a baseline was given.
    """

    frame: pd.DataFrame
    by: tuple[str, ...]
    group_columns: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_columns: tuple[str, ...]
    info: Mapping[str, MetricInfo]
    baseline: Optional[Mapping[str, str]] = None
    ratio_metric: Optional[str] = None
    ratio_kind: Optional[str] = None  # "speedup" (times), "reduction" (other lower-is-better), "gain"

    @property
    def ratio_header(self) -> Optional[str]:
        if not self.ratio_kind:
            return None
        what = "Speedup" if self.ratio_kind == "speedup" else f"{self.info[self.ratio_metric].label} {self.ratio_kind}"
        return f"{what} vs {_describe(self.baseline)}"


# --------------------------------------------------------------------------- selecting rows and columns


def resolve_column(frame: pd.DataFrame, name: str, kind: str = "column",
                   candidates: Optional[Sequence[str]] = None) -> str:
    """Map a user's name (`init`, `deq.init`, `param.deq.init`) to one column of `frame`.

    `candidates` (default: every column) lists what the error shows as available.
    """
    columns = list(frame.columns)
    available = list(candidates) if candidates is not None else columns
    if name in columns:
        return name
    if f"param.{name}" in columns:
        return f"param.{name}"
    hits = [c for c in columns if c.startswith("param.") and c.endswith(f".{name}")]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise ValueError(f"{kind} {name!r} is ambiguous: it matches {', '.join(hits)}; write the full name")
    raise ValueError(f"unknown {kind} {name!r}; available: {', '.join(available) or '(none)'}")


def group_candidates(trials: pd.DataFrame) -> list[str]:
    """Columns one can group by: `study` and every hyperparameter (without the `param.` prefix)."""
    params = [c[len("param."):] for c in trials.columns if c.startswith("param.")]
    return ["study"] * ("study" in trials.columns) + params


def metric_candidates(trials: pd.DataFrame) -> list[str]:
    """Numeric columns that are results, not hyperparameters or provenance."""
    return [c for c in trials.columns
            if not c.startswith("param.") and c not in _NOT_METRICS and pd.api.types.is_numeric_dtype(trials[c])
            and not pd.api.types.is_bool_dtype(trials[c])]


def final_epochs(trials: pd.DataFrame, statuses: Optional[Sequence[str]] = ("completed",)) -> pd.DataFrame:
    """The last recorded epoch of every trial (keyed by study and trial id), optionally only some statuses.

    A trial's status is the status of its last row (a finished trial's status
    is written on every row). Two columns are added: `epochs`, the rows the
    trial has, and `total_time_s`, the sum of its `epoch_time_s` (the wall time
    the trial cost, which the last epoch's time alone does not tell).
    """
    if trials.empty:
        return trials.iloc[0:0].assign(epochs=pd.Series(dtype="int64"), total_time_s=pd.Series(dtype="float64"))
    keys = [k for k in ("study", "trial_id") if k in trials.columns]
    ordered = trials.sort_values([*keys, "epoch"], kind="stable")
    last = ordered.drop_duplicates(keys, keep="last").reset_index(drop=True)
    grouped = ordered.groupby(keys, sort=False)
    extra = pd.DataFrame({"epochs": grouped["epoch"].size()})
    extra["total_time_s"] = (grouped["epoch_time_s"].sum(min_count=1) if "epoch_time_s" in trials.columns
                             else np.nan)
    last = last.drop(columns=[c for c in ("epochs", "total_time_s") if c in last.columns])
    last = last.merge(extra.reset_index(), on=keys, how="left")
    if statuses is not None:
        last = last[last["status"].isin(list(statuses))]
    return last.reset_index(drop=True)


def objective_modes(specs: Sequence[Optional[Mapping]]) -> dict[str, str]:
    """`{metric: mode}` from study specs' `objectives: [{metric, mode}]`; anything malformed is ignored.

    Specs come from study.yaml files that may be missing, a plain TrainConfig
    dump (no objectives), or from another version: read them defensively.
    """
    modes: dict[str, str] = {}
    for spec in specs:
        objectives = spec.get("objectives") if isinstance(spec, Mapping) else None
        if not isinstance(objectives, list):
            continue
        for item in objectives:
            if isinstance(item, Mapping) and isinstance(item.get("metric"), str) and item.get("mode") in MODES:
                modes[item["metric"]] = item["mode"]
    return modes


def metric_info(name: str, modes: Optional[Mapping[str, str]] = None) -> MetricInfo:
    """Display info for a metric column; an objective's mode overrides the built-in direction."""
    info = METRICS.get(name, MetricInfo(name))
    mode = (modes or {}).get(name)
    if mode is not None:
        if mode not in MODES:
            raise ValueError(f"mode for {name!r} must be one of {', '.join(MODES)}, got {mode!r}")
        info = MetricInfo(info.label, info.unit, info.scale, mode)
    return info


# --------------------------------------------------------------------------- aggregation


def aggregate(trials: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *,
              baseline: Optional[Mapping[str, str]] = None, ratio_metric: Optional[str] = None,
              modes: Optional[Mapping[str, str]] = None) -> ComparisonTable:
    """Mean, std and n of each metric at the final epoch of completed trials, per hyperparameter group.

    `baseline` fixes some group values (`{"init": "zeros"}`); every row is then
    compared with the baseline row that shares its other group values (the
    same solver), giving a ratio where > 1 means better than the baseline:
    baseline / row for lower-is-better metrics (for times: the speedup), row /
    baseline for higher-is-better ones. `ratio_metric` defaults to the first
    time metric (`*_time_s`) among `metrics`.
    """
    by, metrics = list(by), list(metrics)
    if not by:
        raise ValueError("give at least one column to group by")
    if not metrics:
        raise ValueError("give at least one metric")
    if trials.empty or "status" not in trials.columns:
        raise ValueError("no trials found: the results hold no trial files")
    last = final_epochs(trials, statuses=None)
    group_cols = [resolve_column(last, b, "group column", group_candidates(last)) for b in by]
    metric_cols = [resolve_column(last, m, "metric", metric_candidates(last)) for m in metrics]
    for m, col in zip(metrics, metric_cols):
        if col.startswith("param.") or not pd.api.types.is_numeric_dtype(last[col]):
            raise ValueError(f"metric {m!r} ({col}) is not a numeric result; available: "
                             f"{', '.join(metric_candidates(last))}")
    for name, group in (("group columns", by), ("metrics", metrics)):
        if len(set(group)) != len(group):
            raise ValueError(f"{name} repeat a name: {', '.join(group)}")
    final = last[last["status"] == "completed"]
    if final.empty:
        found = ", ".join(f"{n} {s}" for s, n in last["status"].value_counts().items())
        raise ValueError(f"no completed trials to aggregate (found: {found})")

    keys = final[group_cols].astype(object).where(final[group_cols].notna(), "none")
    keys.columns = by
    values = final[metric_cols].astype(float)
    values.columns = metrics
    grouped = pd.concat([keys, values], axis=1).groupby(by, sort=False, dropna=False)
    mean, std, n = grouped[metrics].mean(), grouped[metrics].std(ddof=1), grouped.size()
    out = pd.DataFrame({"n": n})
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_std"] = mean[m], std[m]
    out = out.reset_index()
    out = out.iloc[_natural_order(out, by)].reset_index(drop=True)

    info = {m: metric_info(col, modes) for m, col in zip(metrics, metric_cols)}
    ratio_kind = None
    if baseline:
        out, ratio_metric, ratio_kind = _add_ratio(out, by, metrics, info, dict(baseline), ratio_metric)
    elif ratio_metric is not None:
        raise ValueError("ratio_metric needs a baseline (e.g. --baseline init=zeros)")
    return ComparisonTable(out, tuple(by), tuple(group_cols), tuple(metrics), tuple(metric_cols), info,
                           dict(baseline) if baseline else None, ratio_metric, ratio_kind)


def sort_key(v):
    """Numbers by value (1e-4 before 1e-3), then text alphabetically: the order of groups and filter values."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _natural_order(frame: pd.DataFrame, by: Sequence[str]) -> np.ndarray:
    rows = [tuple(sort_key(v) for v in row) for row in frame[list(by)].itertuples(index=False)]
    return np.array(sorted(range(len(rows)), key=lambda i: rows[i]), dtype=int)


def _add_ratio(out, by, metrics, info, baseline, ratio_metric):
    unknown = sorted(set(baseline) - set(by))
    if unknown:
        raise ValueError(f"baseline names {', '.join(unknown)}, which is not a group column; "
                         f"group columns: {', '.join(by)}")
    if ratio_metric is None:
        times = [m for m in metrics if info[m].unit == "s"]
        if not times:
            raise ValueError(f"choose the metric for the baseline ratio (--ratio-of); metrics: {', '.join(metrics)}")
        ratio_metric = times[0]
    if ratio_metric not in metrics:
        raise ValueError(f"ratio metric {ratio_metric!r} is not among the metrics: {', '.join(metrics)}")
    mode = info[ratio_metric].mode
    if mode is None:
        raise ValueError(f"metric {ratio_metric!r} has no known direction for a ratio; "
                         f"name it in the study objectives")
    as_text = out[list(by)].astype(str)
    is_base = np.logical_and.reduce([as_text[k] == str(v) for k, v in baseline.items()])
    if not is_base.any():
        present = {k: sorted(set(as_text[k])) for k in baseline}
        raise ValueError(f"no row matches the baseline {_describe(baseline)}; values present: "
                         + "; ".join(f"{k}: {', '.join(v)}" for k, v in present.items()))
    rest = [k for k in by if k not in baseline]
    base_means = {tuple(as_text.loc[i, rest]): out.loc[i, f"{ratio_metric}_mean"] for i in np.flatnonzero(is_base)}
    ref = np.array([base_means.get(tuple(as_text.loc[i, rest]), np.nan) for i in range(len(out))], dtype=float)
    mean = out[f"{ratio_metric}_mean"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = ref / mean if mode == "min" else mean / ref
    kind = "gain" if mode == "max" else "speedup" if info[ratio_metric].unit == "s" else "reduction"
    return out, ratio_metric, kind


def _describe(baseline: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in baseline.items())


def parse_baseline(text: Optional[str]) -> Optional[dict[str, str]]:
    """`init=zeros,solver=anderson` -> {"init": "zeros", "solver": "anderson"} (CLI form)."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"baseline must look like init=zeros[,solver=anderson], got {text!r}")
        out[key.strip()] = value.strip()
    return out


# --------------------------------------------------------------------------- number formatting


def format_value(mean: float, std: float = math.nan) -> tuple[str, str]:
    """(mean, std) as text with sensible significant digits; std is "" when unknown (one trial).

    The std keeps one significant digit (two when that digit is 1, as 0.12),
    and the mean is rounded to the same decimal place; without a spread the
    mean keeps three significant digits (and a zero std reads "0"). Nothing
    is rounded left of the decimal point (1234 ± 56, not 1230 ± 60). Below
    1e-3 (residuals) both go to scientific form.
    """
    if mean is None or not math.isfinite(mean):
        return "–", ""
    known = std is not None and math.isfinite(std)
    has_std = known and std > 0
    if mean != 0 and (abs(mean) < 1e-3 or abs(mean) >= 1e6):
        return f"{mean:.2e}", (f"{std:.1e}" if has_std else "0" if known else "")
    mag = math.floor(math.log10(abs(mean))) if mean != 0 else 0
    if has_std:
        lead = math.floor(math.log10(std))
        digits = 2 if f"{std:.1e}".startswith("1") else 1
        decimals = max(0, digits - 1 - lead)
        decimals = min(decimals, max(0, 3 - mag))  # at most four significant digits of the mean
        std_text = f"{std:.{decimals}f}"
        if float(std_text) == 0:
            std_text = f"{std:.1e}"
    else:
        decimals = max(0, 2 - mag)
        std_text = "0" if known else ""
    return f"{mean:.{decimals}f}", std_text


def _best_rows(table: ComparisonTable) -> dict[str, set[int]]:
    best = {}
    for m in table.metrics:
        mode = table.info[m].mode
        means = table.frame[f"{m}_mean"].to_numpy(dtype=float)
        if mode is None or not np.isfinite(means).any():
            best[m] = set()
            continue
        target = np.nanmax(means) if mode == "max" else np.nanmin(means)
        best[m] = set(np.flatnonzero(means == target).tolist())
    return best


def _header(info: MetricInfo, unit_fmt: str) -> str:
    return f"{info.label} ({unit_fmt.format(info.unit)})" if info.unit else info.label


def _cells(table: ComparisonTable, pm: str, sci) -> pd.DataFrame:
    """Display strings per cell (no bolding yet), headers with units."""
    f = table.frame
    cols = {b: [_group_text(v) for v in f[b]] for b in table.by}
    cols["n"] = [str(int(v)) for v in f["n"]]
    for m in table.metrics:
        info = table.info[m]
        texts = []
        for mean, std in zip(f[f"{m}_mean"], f[f"{m}_std"]):
            a, b = format_value(mean * info.scale, std * info.scale)
            texts.append(f"{sci(a)}{pm}{sci(b)}" if b else sci(a))
        cols[m] = texts
    if table.ratio_header:
        cols["ratio"] = [f"{v:.2f}" if math.isfinite(v) else "–" for v in f["ratio"]]
    return pd.DataFrame(cols)


def _group_text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


# --------------------------------------------------------------------------- rendering


def render(table: ComparisonTable, fmt: str) -> str:
    """The table as LaTeX (booktabs), Markdown or CSV text."""
    if fmt == "latex":
        return _latex(table)
    if fmt == "markdown":
        return _markdown(table)
    if fmt == "csv":
        return _csv(table)
    raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


def _markdown(table: ComparisonTable) -> str:
    cells = _cells(table, " ± ", lambda s: s)
    best = _best_rows(table)
    for m in table.metrics:
        cells[m] = [f"**{t}**" if i in best[m] else t for i, t in enumerate(cells[m])]
    if table.ratio_header:
        cells["ratio"] = [t if t == "–" else f"{t}×" for t in cells["ratio"]]
    headers = [*table.by, "n", *(_header(table.info[m], "{}") for m in table.metrics)]
    headers += [table.ratio_header] if table.ratio_header else []
    numeric = [False] * len(table.by) + [True] * (len(headers) - len(table.by))
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---:" if r else ":---" for r in numeric) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = str.maketrans({"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
                                "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                                "\\": r"\textbackslash{}"})


def _latex_escape(text: str) -> str:
    return str(text).translate(_LATEX_SPECIAL)


def _latex_sci(text: str) -> str:
    """1.2e-05 -> $1.2\\times10^{-5}$ (plain numbers unchanged)."""
    if "e" not in text:
        return text
    mant, exp = text.split("e")
    return f"${mant}\\times10^{{{int(exp)}}}$"


def _latex(table: ComparisonTable) -> str:
    cells = _cells(table, r" $\pm$ ", _latex_sci)
    for b in table.by:
        cells[b] = [_latex_escape(t) for t in cells[b]]
    if table.ratio_header:
        cells["ratio"] = [t if t == "–" else f"{t}$\\times$" for t in cells["ratio"]]
    cells = cells.replace("–", "--")
    headers = [*(_latex_escape(b) for b in table.by), "$n$",
               *(_latex_escape(_header(table.info[m], "{}")) for m in table.metrics)]
    headers += [_latex_escape(table.ratio_header)] if table.ratio_header else []
    cells.columns = headers
    best = _best_rows(table)
    metric_pos = {m: len(table.by) + 1 + j for j, m in enumerate(table.metrics)}

    def bold(frame: pd.DataFrame) -> pd.DataFrame:
        css = pd.DataFrame("", index=frame.index, columns=frame.columns)
        for m, rows in best.items():
            for i in rows:
                css.iat[i, metric_pos[m]] = "textbf:--rwrap;"
        return css

    styler = cells.style.apply(bold, axis=None).hide(axis="index")
    column_format = "l" * len(table.by) + "r" * (len(headers) - len(table.by))
    return styler.to_latex(hrules=True, column_format=column_format)


def _csv(table: ComparisonTable) -> str:
    f = table.frame
    out = pd.DataFrame({b: [_group_text(v) for v in f[b]] for b in table.by})
    out["n"] = f["n"].astype(int).to_numpy()
    for m in table.metrics:
        info = table.info[m]
        suffix = _UNIT_SUFFIX.get(info.unit, info.unit)
        stem = m + (f"_{suffix}" if info.unit and not m.endswith(f"_{info.unit}") else "")
        out[f"{stem}_mean"] = f[f"{m}_mean"].to_numpy(dtype=float) * info.scale
        out[f"{stem}_std"] = f[f"{m}_std"].to_numpy(dtype=float) * info.scale
    if table.ratio_header:
        base = "_".join(f"{k}={v}" for k, v in table.baseline.items())
        out[f"{table.ratio_metric}_{table.ratio_kind}_vs_{base}"] = f["ratio"].to_numpy(dtype=float)
    buf = io.StringIO()
    out.to_csv(buf, index=False, float_format="%.6g", lineterminator="\n")
    return buf.getvalue()
