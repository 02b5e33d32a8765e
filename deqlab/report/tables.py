"""Comparison tables for papers and READMEs: aggregate trials, render LaTeX, Markdown or CSV.

Two verbs, shared by `deqlab export`, the dashboard's Compare and Export pages
and the end-of-study table of `deqlab run`:

    table = aggregate(trials, by=["init", "solver"], metrics=["test_acc", "nfe_fwd", "epoch_time_s"],
                      baseline={"init": "zeros"})
    print(render(table, "markdown"))        # or "latex" (table + booktabs + siunitx) or "csv"

`aggregate` (this module) takes the trials frame of `deqlab.results.load` (one
row per epoch), keeps the final epoch of every completed trial, groups by the
chosen hyperparameters and returns a `ComparisonTable`: mean, std and n per
group; with a baseline, a ratio and its bootstrap interval over seeds. A
continuous parameter is grouped in bins (`tol:4`) or refused with that hint;
pooling several studies in one row is reported in `table.warnings`.
`render` (deqlab/report/render.py) formats it: display names, one precision
per column, units, best in bold, a caption that says how it was computed.

Names resolve to columns the same way everywhere (`resolve_column`): the exact
column, else `param.<name>`, else the one `param.*` column ending in
`.<name>` (so `init` finds `param.deq.init`); an unknown or ambiguous name is a
ValueError that lists what is available.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..results.schema import MODES, NOT_METRICS, Metric, Status, metric_info
from .ratio import add_ratio, describe_baseline

FORMATS = ("latex", "markdown", "csv")
DEFAULT_BY = ("init", "solver")  # `deqlab export` and `StudyResult.table` without --by / by=
DEFAULT_METRICS = ("test_acc", "nfe_fwd", "epoch_time_s")


@dataclass(frozen=True)
class ComparisonTable:
    """The aggregated comparison, in raw units (accuracy as a fraction, times in seconds).

    `frame` has one row per group, in sorted group order, with the group
    columns named as the user wrote them (`by`, without a `:bins` suffix), `n`,
    then `<metric>_mean` and `<metric>_std` for each metric, and with a
    baseline `ratio`, `ratio_lo`, `ratio_hi` (the bootstrap interval).
    `min_n` is the fewest trials a row needs to be called best; `binned`
    names the group columns cut into bins; `warnings` are for the reader.
    """

    frame: pd.DataFrame
    by: tuple[str, ...]
    group_columns: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_columns: tuple[str, ...]
    info: Mapping[str, Metric]
    baseline: Optional[Mapping[str, str]] = None
    ratio_metric: Optional[str] = None
    ratio_kind: Optional[str] = None  # "speedup" (times), "reduction" (other lower-is-better), "gain"
    min_n: int = 1
    binned: tuple[str, ...] = ()
    paired: Optional[bool] = None  # the bootstrap paired trials by seed (None: no interval)
    warnings: tuple[str, ...] = ()

    @property
    def ratio_header(self) -> Optional[str]:
        if not self.ratio_kind:
            return None
        what = "Speedup" if self.ratio_kind == "speedup" else f"{self.info[self.ratio_metric].label} {self.ratio_kind}"
        return f"{what} vs {describe_baseline(self.baseline)}"



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
    shallowest = [c for c in hits if c.count(".") == min(h.count(".") for h in hits)] if hits else []
    if len(shallowest) == 1:  # `solver` is deq.solver even when deq.backward_options.solver is set too
        return shallowest[0]
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
            if not c.startswith("param.") and c not in NOT_METRICS and pd.api.types.is_numeric_dtype(trials[c])
            and not pd.api.types.is_bool_dtype(trials[c])]


def final_epochs(trials: pd.DataFrame, statuses: Optional[Sequence[str]] = (Status.COMPLETED,)) -> pd.DataFrame:
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


# --------------------------------------------------------------------------- aggregation

MAX_LEVELS = 8  # a float hyperparameter with more distinct values is continuous: bin it


def aggregate(trials: pd.DataFrame, by: Sequence[str], metrics: Sequence[str], *,
              baseline: Optional[Mapping[str, str]] = None, ratio_metric: Optional[str] = None,
              modes: Optional[Mapping[str, str]] = None) -> ComparisonTable:
    """Mean, std and n of each metric at the final epoch of completed trials, per hyperparameter group.

    A group name may carry a bin count (`tol:4`): the parameter is cut into
    that many bins (log-spaced when its values span more than 10x). `baseline`
    fixes some group values (`{"init": "zeros"}`); every row is then compared
    with the baseline row that shares its other group values (the same
    solver), giving a ratio where > 1 means better than the baseline:
    baseline / row for lower-is-better metrics (for times: the speedup), row /
    baseline for higher-is-better ones, with a bootstrap interval over seeds.
    `ratio_metric` defaults to the first time metric (`*_time_s`) among `metrics`.
    """
    by, bins = _parse_by(by)
    metrics = list(metrics)
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
    final = last[last["status"] == Status.COMPLETED]
    if final.empty:
        found = ", ".join(f"{n} {s}" for s, n in last["status"].value_counts().items())
        raise ValueError(f"no completed trials to aggregate (found: {found})")

    keys, ranks = _group_keys(final, by, group_cols, bins)
    values = final[metric_cols].astype(float)
    values.columns = metrics
    grouped = pd.concat([keys, values], axis=1).groupby(by, sort=False, dropna=False)
    mean, std, n = grouped[metrics].mean(), grouped[metrics].std(ddof=1), grouped.size()
    out = pd.DataFrame({"n": n})
    for m in metrics:
        out[f"{m}_mean"], out[f"{m}_std"] = mean[m], std[m]
    out = out.reset_index()
    out = out.iloc[_natural_order(out, by, ranks)].reset_index(drop=True)

    info = {m: metric_info(col, modes) for m, col in zip(metrics, metric_cols)}
    ratio_kind = paired = None
    if baseline:
        seeds = final["seed"] if "seed" in final.columns else pd.Series(np.arange(len(final)), index=final.index)
        samples = pd.concat([keys, values, seeds.rename("_seed")], axis=1)
        out, ratio_metric, ratio_kind, paired = add_ratio(out, by, info, dict(baseline), ratio_metric, samples,
                                                           metrics)
    elif ratio_metric is not None:
        raise ValueError("ratio_metric needs a baseline (e.g. --baseline init=zeros)")
    return ComparisonTable(out, tuple(by), tuple(group_cols), tuple(metrics), tuple(metric_cols), info,
                           dict(baseline) if baseline else None, ratio_metric, ratio_kind,
                           min_n=min(3, int(out["n"].max())), binned=tuple(bins), paired=paired,
                           warnings=tuple(_pooling_warnings(final, by)))


def _parse_by(by: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """`["tol:4", "init"]` -> (["tol", "init"], {"tol": 4})."""
    names, bins = [], {}
    for item in by:
        name, sep, count = str(item).partition(":")
        if sep:
            if not count.isdigit() or not 2 <= int(count) <= 20:
                raise ValueError(f"bin count in {item!r} must be an integer from 2 to 20, e.g. {name}:4")
            bins[name] = int(count)
        names.append(name)
    if not names:
        raise ValueError("give at least one column to group by")
    return names, bins


def _group_keys(final, by, group_cols, bins):
    """The group value of every trial (binned where asked), and the display order of binned labels."""
    keys = final[group_cols].astype(object).where(final[group_cols].notna(), "none")
    keys.columns = by
    ranks = {}
    for name, col in zip(by, group_cols):
        column = final[col]
        if name in bins:
            if not pd.api.types.is_numeric_dtype(column):
                raise ValueError(f"{name} is not numeric: group by it without a bin count")
            keys[name], ranks[name] = bin_values(column.astype(float), bins[name])
        elif pd.api.types.is_float_dtype(column) and column.nunique() > MAX_LEVELS:
            raise ValueError(f"{name} has {column.nunique()} distinct values (a continuous parameter): "
                             f"group it in bins, e.g. --by {name}:4 (log-spaced when it spans more than 10x)")
    return keys, ranks


def bin_values(values: pd.Series, count: int) -> tuple[pd.Series, dict[str, int]]:
    """Cut numbers into `count` equal bins, log-spaced for positive values spanning more than 10x.

    Returns the label of each value (`[0.0001, 0.00032)`, the last bin closed)
    and each label's rank, so bins sort by value, not alphabetically.
    """
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:
        return pd.Series(f"{lo:g}", index=values.index, dtype=object), {f"{lo:g}": 0}
    log = lo > 0 and hi > 10 * lo
    edges = np.geomspace(lo, hi, count + 1) if log else np.linspace(lo, hi, count + 1)
    index = np.clip(np.searchsorted(edges, values.to_numpy(), side="right") - 1, 0, count - 1)
    labels = [f"[{edges[i]:.2g}, {edges[i + 1]:.2g}" + ("]" if i == count - 1 else ")") for i in range(count)]
    return pd.Series([labels[i] for i in index], index=values.index, dtype=object), {t: i for i, t in
                                                                                      enumerate(labels)}


def _pooling_warnings(final: pd.DataFrame, by: Sequence[str]) -> list[str]:
    if "study" in by or "study" not in final.columns or final["study"].nunique() < 2:
        return []
    studies = sorted(final["study"].unique())
    text = f"rows pool {len(studies)} studies ({', '.join(studies)})"
    if "param.epochs" in final.columns and final["param.epochs"].nunique() > 1:
        text += f" trained for different epochs ({', '.join(str(e) for e in sorted(final['param.epochs'].unique()))})"
    return [text + "; add `study` to --by to keep them apart"]


def sort_key(v):
    """Numbers by value (1e-4 before 1e-3), then text alphabetically: the order of groups and filter values."""
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _natural_order(frame: pd.DataFrame, by: Sequence[str], ranks: Mapping[str, Mapping[str, int]]) -> np.ndarray:
    def key(name, v):
        return (0, ranks[name][v], "") if name in ranks else sort_key(v)
    rows = [tuple(key(b, v) for b, v in zip(by, row)) for row in frame[list(by)].itertuples(index=False)]
    return np.array(sorted(range(len(rows)), key=lambda i: rows[i]), dtype=int)


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


def pooled_hardware(trials: pd.DataFrame, by) -> list[str]:
    """One line per row of `deqlab export`'s table whose completed trials ran on different hardware."""
    final = final_epochs(trials) if len(trials) else trials
    if final.empty or "hardware" not in final.columns:
        return []
    cols = [resolve_column(final, b, "group column") for b in by]
    if "hardware" in cols:
        return []
    lines = []
    for key, group in final.groupby(cols, dropna=False, sort=True):
        kinds = sorted(group["hardware"].dropna().astype(str).unique())
        if len(kinds) > 1:
            key = key if isinstance(key, tuple) else (key,)
            where = ", ".join(f"{b}={k}" for b, k in zip(by, key))
            lines.append(f"row {where} pools {len(group)} trials from {len(kinds)} kinds of hardware "
                         f"({'; '.join(kinds)}): its times are not comparable; --by {','.join(by)},hardware "
                         "splits them")
    return lines


def export_table(trials: pd.DataFrame, specs: Sequence[Optional[Mapping]], by: Optional[Sequence[str]] = None,
                 metrics: Optional[Sequence[str]] = None, *, baseline=None,
                 ratio_metric: Optional[str] = None) -> tuple[ComparisonTable, list[str]]:
    """`deqlab export`'s table and its warnings for the reader, the one computation behind the command, the
    dashboard's Export page and `StudyResult.table` (deqlab/api.py): `by` and `metrics` default to DEFAULT_BY and DEFAULT_METRICS,
    directions come from the studies' objectives, `baseline` is a mapping or the CLI's `init=zeros` text;
    the warnings name rows that pool hardware or studies."""
    by, metrics = by or DEFAULT_BY, metrics or DEFAULT_METRICS
    if isinstance(baseline, str):
        baseline = parse_baseline(baseline)
    table = aggregate(trials, by, metrics, baseline=baseline, ratio_metric=ratio_metric,
                      modes=objective_modes(specs))
    return table, [*pooled_hardware(trials, table.by), *table.warnings]


def render(table: ComparisonTable, fmt: str, **options) -> str:
    """The table as LaTeX (a `table` with booktabs and siunitx), Markdown or CSV (see deqlab/report/render.py)."""
    from .render import render_table

    return render_table(table, fmt, **options)
