"""The Compare page's sections below the scatter (dashboard/app.py): grouped plots, learning curves,
Optuna's search views and the baseline comparison with its bootstrap intervals."""

from __future__ import annotations

import warnings

import plotly.express as px
import streamlit as st

from deqlab.report import figures as figs
from deqlab.report import tables as export
from deqlab.report import views as dd
from deqlab.report.render import notes
from deqlab.results import column_name, metric_info, value_name


def objectives(specs: dict) -> dict[str, str]:
    """{metric: mode} of the studies' objectives, else the default objective of the views."""
    return export.objective_modes(list(specs.values())) or dict(dd.DEFAULT_OBJECTIVES)


def mode_of(metric: str, goals: dict) -> str:
    """The direction of a metric: the study's objective, else the metric's own, else max."""
    return goals.get(metric) or metric_info(metric).mode or "max"


def default_index(options, wanted, fallback=0):
    return next((options.index(w) for w in wanted if w in options), fallback)


def by_hyperparameter(summary, frame, metrics, y, params, colour, cmap):
    st.subheader("By hyperparameter")
    b1, b2, b3 = st.columns(3)
    metric = b1.selectbox("metric", metrics, index=metrics.index(y), format_func=figs.axis_title, key="box_metric")
    by = b2.selectbox("group by", params, format_func=column_name, key="box_by",
                      index=next((i for i, c in enumerate(params) if c.endswith(".solver")), 0))
    kind = b3.radio("plot", ("box", "mean ± std"), horizontal=True, key="box_kind")
    frame = figs.with_display_values(figs.in_display_units(summary), {by, colour} - {"(none)"})
    split = None if colour in ("(none)", by) else colour
    order = {c: figs.category_order(frame, summary, c) for c in (by, split) if c}
    common = dict(color=split, category_orders=order, labels=figs.labels(frame.columns),
                  color_discrete_map=cmap.of(split) if split else cmap.of(by))
    if kind == "box":
        fig = px.box(frame, x=by, y=metric, points="all", **{**common, "color": split or by})
    else:
        # points with error bars, not bars from 0: a 0.85 vs 0.95 gap stays visible
        means = frame.groupby([by] + ([split] if split else []))[metric].agg(["mean", "std", "size"]).reset_index()
        fig = px.scatter(means, x=by, y="mean", error_y="std", hover_data=["size"],
                         **{**common, "color": split or by, "labels": {**common["labels"], "mean": figs.axis_title(metric)}})
        fig.update_traces(marker=dict(size=11))
    st.plotly_chart(fig, key="compare_box")


def learning_curves(trials, summary, colour, cmap):
    st.subheader("Learning curves")
    metric_options = [m for m in dd.CURVE_METRICS if m in trials.columns]
    if trials.empty or not metric_options:
        return
    metric = st.selectbox("curve", metric_options, format_func=figs.axis_title, key="curve_metric")
    rows = trials.merge(summary[["study", "trial_id"]], on=["study", "trial_id"])
    st.caption("Every trial, one line each: completed solid, pruned and other statuses dashed.")
    st.plotly_chart(figs.learning_curves(rows, metric, None if colour == "(none)" else colour, cmap), key="curves_all")


def search_analysis(summary, goals, params):
    st.header("Search")
    st.caption("How the searched hyperparameters relate to an objective: parallel coordinates, importance, slices.")
    metrics = [m for m in goals if m in summary.columns] or dd.numeric_metrics(summary)[:1]
    if summary.empty or not metrics or not params:
        st.info("Needs trials with a searched hyperparameter and an objective.")
        return
    metric = st.selectbox("objective", metrics, format_func=figs.axis_title, key="search_metric")
    study = figs.optuna_study(summary, params, metric, mode_of(metric, goals))
    if study is None:
        st.info("Needs at least two completed trials with every searched value recorded.")
        return
    import optuna.visualization as ov

    tabs = st.tabs(["parallel coordinates", "importance", "slice"])
    tabs[0].plotly_chart(ov.plot_parallel_coordinate(study, target_name=figs.axis_title(metric)), key="opt_par")
    try:
        with warnings.catch_warnings(record=True) as caught:  # e.g. "importances will be equal": say it on the page
            warnings.simplefilter("always")
            importance = ov.plot_param_importances(study, target_name=figs.axis_title(metric))
        tabs[1].plotly_chart(importance, key="opt_imp")
        for w in caught:
            tabs[1].caption(dd.as_text(w.message))
    except (ValueError, RuntimeError) as exc:  # the evaluator needs some spread in values
        tabs[1].info(dd.as_text(f"No importance: {exc}"))
    tabs[2].plotly_chart(ov.plot_slice(study, target_name=figs.axis_title(metric)), key="opt_slice")
    st.caption(f"Optuna's own plots over the {len(study.trials)} completed trials shown (an in-memory study "
               "rebuilt from the results files).")


def baseline_intervals(trials, summary, goals, params):
    st.subheader("Against a baseline")
    groups = [p for p in params if p.endswith(("init", "solver"))] or params[:1]
    times = [m for m in dd.numeric_metrics(summary) if m.endswith("_time_s") or m.startswith("nfe")]
    if not groups or not times:
        return
    c1, c2, c3 = st.columns(3)
    col = c1.selectbox("baseline column", groups, format_func=column_name, key="ci_col")
    values = sorted(summary[col].dropna().unique().tolist(), key=dd.sort_key)
    base = c2.selectbox("baseline", values, index=default_index(values, ["zeros"]), format_func=lambda v: value_name(col, v),
                        key="ci_value")
    metric = c3.selectbox("ratio of", times, index=default_index(times, dd.RATIO_METRICS), format_func=figs.axis_title,
                          key="ci_metric")
    by = [g[len("param."):] for g in groups]
    rows = trials.merge(summary[["study", "trial_id"]], on=["study", "trial_id"])
    try:
        table = export.aggregate(rows, by, [metric], baseline={col[len("param."):]: str(base)}, modes=goals)
    except ValueError as exc:
        st.info(dd.as_text(exc))
        return
    fig = figs.interval_bars(table)
    if fig is None:
        st.info("No interval: each side needs at least two trials (seeds).")
    else:
        st.plotly_chart(fig, key="ci_plot")
    st.caption(dd.as_text(" ".join(notes(table))))
