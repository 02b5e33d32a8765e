"""The dashboard's figures, built from DataFrames without Streamlit so their colours and axes can be tested.

One look across every page:

- `ColourMap`: one colour per (hyperparameter, value) for the whole app,
  assigned from all trials (not the filtered ones), so `DEQ` is the same blue
  in every plot and stays so under filters; statuses have fixed colours;
- axis titles from `axis_title`: the tables' labels with units (`Test acc. (%)`,
  `Train time (s)`), and accuracies plotted in % (`in_display_units`);
- learning curves of all trials overlaid (completed solid, pruned dashed),
  integer epoch ticks; residual traces with the trial's tolerance drawn;
- Optuna's own parallel-coordinate, importance and slice plots, from an
  in-memory study rebuilt from the Parquet rows (`optuna_study`).
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ..results.schema import CATALOGUE, Status, column_name, metric_info, value_name
from .tables import sort_key
from .views import pareto_mask

PALETTE = px.colors.qualitative.Plotly + px.colors.qualitative.D3[1:] + px.colors.qualitative.Dark24
STATUS_COLOURS = {Status.COMPLETED.value: "#2ca02c", Status.RUNNING.value: "#1f77b4", Status.PRUNED.value: "#ff7f0e",
                  Status.DIVERGED.value: "#9467bd", Status.FAILED.value: "#d62728"}
EPOCH_AXIS = dict(title_text="epoch", tickmode="linear", dtick=1, tick0=0)


class ColourMap:
    """Colours keyed by column then display value, fixed from every trial's values."""

    def __init__(self, summary: pd.DataFrame, columns: Sequence[str]):
        self.maps: dict[str, dict[str, str]] = {"status": dict(STATUS_COLOURS)}
        for col in columns:
            if col in summary.columns:
                values = sorted(summary[col].dropna().unique().tolist(), key=sort_key)
                self.maps[col] = {value_name(col, v): PALETTE[i % len(PALETTE)] for i, v in enumerate(values)}

    def of(self, column: Optional[str]) -> dict[str, str]:
        return self.maps.get(column, {}) if column else {}


def axis_title(column: str) -> str:
    """`test_acc` -> `Test acc. (%)`, `epoch_time_s` -> `Epoch time (s)`, `param.deq.tol` -> `Tolerance`."""
    if column.startswith("param.") or column == "study":
        return column_name(column)
    return metric_info(column).title


def in_display_units(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with fractions shown in percent (accuracy 0.91 -> 91), as the tables show them."""
    out = frame.copy()
    for col, info in CATALOGUE.items():
        if col in out.columns and info.scale != 1:
            out[col] = pd.to_numeric(out[col], errors="coerce") * info.scale
    return out


def with_display_values(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """A copy whose grouping columns hold display names (`SkipDEQ`, `seed 0` not `0.0`) as text."""
    out = frame.copy()
    for col in columns:
        if col and col in out.columns:
            out[col] = [value_name(col, v) for v in out[col]]
    return out


def labels(columns: Sequence[str]) -> dict[str, str]:
    return {c: axis_title(c) for c in columns}


def category_order(frame: pd.DataFrame, raw: pd.DataFrame, column: str) -> list[str]:
    """Display values in the natural order of the raw values (1e-4 before 1e-3)."""
    values = sorted(raw[column].dropna().unique().tolist(), key=sort_key)
    present = set(frame[column])
    return [value_name(column, v) for v in values if value_name(column, v) in present]


def learning_curves(trials: pd.DataFrame, metric: str, colour: Optional[str], cmap: ColourMap) -> go.Figure:
    """Every trial's `metric` by epoch, one line each: completed solid, pruned/other statuses dashed."""
    rows = in_display_units(trials[trials["epoch"] >= 0]).sort_values(["study", "trial_id", "epoch"])
    fig = go.Figure()
    shown = set()
    for (study, trial), part in rows.groupby(["study", "trial_id"], sort=False):
        status = str(part["status"].iloc[-1])
        key = value_name(colour, part[colour].iloc[0]) if colour and colour in part else status
        colours = cmap.of(colour) if colour and colour in part else STATUS_COLOURS
        name = f"{key}" if status == Status.COMPLETED else f"{key} ({status})"
        fig.add_trace(go.Scatter(x=part["epoch"], y=part[metric], mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=name not in shown,
                                 line=dict(color=colours.get(key, "#7f7f7f"),
                                           dash="solid" if status == Status.COMPLETED else "dash"),
                                 hovertext=f"{study} / {trial} ({status})", hoverinfo="text+y"))
        shown.add(name)
    fig.update_xaxes(**EPOCH_AXIS)
    fig.update_yaxes(title_text=axis_title(metric))
    return fig


FRONT = "Pareto front"  # the name of the front's trace in the legend


def pareto_trace(frame: pd.DataFrame, x: str, y: str, x_mode: str, y_mode: str) -> go.Scatter:
    """The Pareto front of (x, y) as a dotted black line through open circles."""
    on = frame[pareto_mask(frame, x, y, x_mode, y_mode)].sort_values(x)
    return go.Scatter(x=on[x], y=on[y], mode="lines+markers", name=FRONT,
                      line=dict(color="black", width=1, dash="dot"),
                      marker=dict(symbol="circle-open", size=12, color="black"), hoverinfo="skip")


def compare_scatter(summary: pd.DataFrame, x: str, y: str, colour: Optional[str], cmap: ColourMap, *,
                    x_mode: str, y_mode: str, facet: Optional[str] = None, hover: Sequence[str] = (),
                    log_x: bool = False) -> go.Figure:
    """The Compare page's figure (and `StudyResult.figure`): one point per trial (`summary`: one row per
    trial, raw units), accuracy in %, coloured by `colour`'s display values with `cmap`'s fixed colours,
    optionally one panel per `facet` value, each with its Pareto front for the given directions."""
    split = [c for c in dict.fromkeys((colour, facet)) if c]
    frame = with_display_values(in_display_units(summary), split)
    facet_values = category_order(frame, summary, facet) if facet else [None]
    fig = px.scatter(frame, x=x, y=y, color=colour, color_discrete_map=cmap.of(colour),
                     category_orders={c: category_order(frame, summary, c) for c in split},
                     facet_col=facet, hover_data=list(hover), log_x=log_x,
                     render_mode="svg" if len(frame) <= 2000 else "webgl", labels=labels(frame.columns))
    fig.update_xaxes(matches=None, showticklabels=True)  # each facet its own x range: one outlier squeezes none
    for k, value in enumerate(facet_values, 1):
        part = frame if value is None else frame[frame[facet] == value]
        trace = pareto_trace(part, x, y, x_mode, y_mode)
        trace.showlegend = k == 1
        fig.add_trace(trace, row=1, col=k)
    return fig


# The trial view's panels (title, metrics) and each metric's line colour; names and units from the catalogue.
PANELS = ((None, ("test_acc",)), ("loss", ("train_loss", "test_loss")), ("NFE per sample", ("nfe_fwd", "nfe_bwd")),
          ("time per epoch (s)", ("epoch_time_s", "fwd_time_s", "bwd_time_s")))
SERIES_COLOURS = {"test_acc": "#1f77b4", "train_loss": "#ff7f0e", "test_loss": "#2ca02c", "nfe_fwd": "#d62728",
                  "nfe_bwd": "#9467bd", "epoch_time_s": "#8c564b", "fwd_time_s": "#e377c2", "bwd_time_s": "#17becf"}


def timeline_figure(frame: pd.DataFrame) -> go.Figure:
    """One bar per trial from its start to its last epoch, coloured by status: when trials overlapped,
    waited for resources, or were cut short."""
    frame = frame.assign(trial=frame["study"] + " / " + frame["trial_id"])
    fig = px.timeline(frame, x_start="start", x_end="finish", y="trial", color="status",
                      color_discrete_map=STATUS_COLOURS, labels={"trial": "Trial", "status": "Status"})
    fig.update_yaxes(autorange="reversed", title="Trial")
    fig.update_xaxes(title="Wall-clock time (UTC)")
    return fig


def trial_curves(hist: pd.DataFrame) -> go.Figure:
    """One trial by epoch in four panels (accuracy in %, loss, NFE, time), one legend group per panel."""
    from plotly.subplots import make_subplots  # noqa: PLC0415 (only this figure needs it)

    titles = [title or axis_title(cols[0]) for title, cols in PANELS]  # one metric: its label and unit
    fig = make_subplots(rows=2, cols=2, subplot_titles=titles)
    for k, ((_, cols), title) in enumerate(zip(PANELS, titles)):
        r, c = k // 2 + 1, k % 2 + 1
        for col in cols:
            if col in hist.columns and hist[col].notna().any():
                fig.add_trace(go.Scatter(x=hist["epoch"], y=hist[col], mode="lines+markers", name=metric_info(col).label,
                                         line=dict(color=SERIES_COLOURS[col]), legendgroup=title,
                                         legendgrouptitle_text=title), row=r, col=c)
        fig.update_yaxes(title_text=title, row=r, col=c)
    fig.update_xaxes(**EPOCH_AXIS)
    fig.update_layout(height=600, legend=dict(groupclick="toggleitem"))
    return fig


def residual_figure(traces: pd.DataFrame, tol: Optional[float]) -> go.Figure:
    """Max relative residual per solver step, forward and backward side by side, log y, with the tolerance line."""
    frame = traces.assign(epoch=traces["epoch"].astype(int).astype(str))
    order = sorted(frame["epoch"].unique(), key=int)
    fig = px.line(frame, x="step", y="residual_max", color="epoch", facet_col="phase", log_y=True, markers=True,
                  category_orders={"phase": ["fwd", "bwd"], "epoch": order},
                  labels={"residual_max": "max relative residual", "step": "solver step", "epoch": "epoch"})
    if tol is not None and math.isfinite(tol) and tol > 0:
        fig.add_hline(y=tol, line=dict(color="black", dash="dot"), annotation_text=f"tol {tol:.2g}",
                      annotation_position="bottom right", row=1, col=1)  # the forward solve's tolerance
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("phase=fwd", "forward").replace("phase=bwd",
                                                                                                    "backward")))
    return fig


def trial_label(row: Mapping) -> str:
    """What the trial picker shows: study / id, then init, solver, tolerance and status."""
    parts = [value_name(k, row[k]) for k in ("param.deq.init", "param.deq.solver") if k in row and pd.notna(row[k])]
    if "param.deq.tol" in row and pd.notna(row["param.deq.tol"]):
        parts.append(f"tol {float(row['param.deq.tol']):.2g}")
    return f"{row['study']} / {row['trial_id']}: {' '.join(parts)} ({row['status']})"


def optuna_study(summary: pd.DataFrame, params: Sequence[str], metric: str, mode: str):
    """An in-memory Optuna study of the completed trials: `params` as distributions, `metric` as the value.

    Numbers become float (or int) ranges, log-scaled when positive and spanning
    more than 10x; anything else a categorical of its display names (SkipDEQ). Rows with a
    missing value are left out. Returns None with fewer than two trials.
    """
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    done = summary[(summary["status"] == Status.COMPLETED) & summary[metric].notna()] if "status" in summary else summary
    dists = {}
    for col in params:
        values = done[col].dropna()
        if values.empty or values.nunique() < 2:
            continue
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            lo, hi = float(values.min()), float(values.max())
            log = lo > 0 and hi > 10 * lo
            is_int = pd.api.types.is_integer_dtype(values)
            dists[col] = IntDistribution(int(lo), int(hi), log=log) if is_int else FloatDistribution(lo, hi, log=log)
        else:
            dists[col] = CategoricalDistribution([value_name(col, v) for v in sorted(values.unique(), key=sort_key)])
    done = done.dropna(subset=list(dists))
    if len(done) < 2 or not dists:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for _, row in done.iterrows():
        values = {column_name(c): (value_name(c, row[c]) if isinstance(d, CategoricalDistribution) else
                                   int(row[c]) if isinstance(d, IntDistribution) else float(row[c]))
                  for c, d in dists.items()}
        study.add_trial(optuna.trial.create_trial(
            params=values, distributions={column_name(c): d for c, d in dists.items()},
            value=float(row[metric]) * (metric_info(metric).scale or 1.0)))
    return study


def interval_bars(table) -> Optional[go.Figure]:
    """The Compare page's view of a baseline comparison: each group's ratio with its bootstrap interval."""
    f = table.frame
    if "ratio" not in f or not np.isfinite(f["ratio_lo"]).any():
        return None
    names = [" / ".join(value_name(b, v) for b, v in zip(table.by, row)) for row in f[list(table.by)].itertuples(
        index=False)]
    fig = go.Figure(go.Scatter(
        x=f["ratio"], y=names, mode="markers", marker=dict(size=10, color="black"),
        error_x=dict(type="data", symmetric=False, array=(f["ratio_hi"] - f["ratio"]).fillna(0),
                     arrayminus=(f["ratio"] - f["ratio_lo"]).fillna(0))))
    fig.add_vline(x=1.0, line=dict(color="grey", dash="dot"))
    fig.update_xaxes(title_text=f"{table.ratio_header} (×, 95% bootstrap interval over seeds)")
    fig.update_yaxes(title_text=" / ".join(column_name(b) for b in table.by), autorange="reversed")
    return fig
