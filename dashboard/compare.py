"""The Compare page: a scatter of two metrics with its Pareto front; the sections below it live in
compare_sections.py."""

from __future__ import annotations

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

import compare_sections as sections
from compare_sections import objectives
from deqlab.report import figures as figs
from deqlab.report import views as dd
from deqlab.results import column_name

FRONT = "Pareto front"


def _pareto_trace(frame, x, y, x_mode, y_mode):
    on = frame[dd.pareto_mask(frame, x, y, x_mode, y_mode)].sort_values(x)
    return go.Scatter(x=on[x], y=on[y], mode="lines+markers", name=FRONT,
                      line=dict(color="black", width=1, dash="dot"),
                      marker=dict(symbol="circle-open", size=12, color="black"), hoverinfo="skip")


def _mode(metric, specs):
    return sections.mode_of(metric, objectives(specs))


def page_compare(summary, specs, params, trials, cmap):
    """`params`: the hyperparameters that vary over all trials, so colour and facet keep their choice under filters."""
    st.header("Compare")
    if summary.empty:
        st.info("No trials match the filters.")
        return
    metrics = dd.numeric_metrics(summary)
    if not metrics:
        st.info("The trials have no metrics yet.")
        return
    c1, c2, c3, c4 = st.columns(4)
    # NFE by default: the study's objectives and the CLI's Pareto front count solver steps, not seconds
    x = c1.selectbox("x", metrics, index=sections.default_index(metrics, dd.DEFAULT_X), format_func=figs.axis_title,
                     key="cmp_x")
    y = c2.selectbox("y", metrics, index=sections.default_index(metrics, dd.DEFAULT_Y), format_func=figs.axis_title, key="cmp_y")
    groups = ["(none)", "study", *params]
    default_colour = next((i for i, c in enumerate(groups) if c.endswith(".init")), 0)
    colour = c3.selectbox("colour", groups, index=default_colour, format_func=_group_name, key="cmp_colour")
    facet = c4.selectbox("facet", groups, index=0, format_func=_group_name, key="cmp_facet")
    log_x = st.checkbox("log x", value=False, key="cmp_logx")

    split = [c for c in {colour, facet} - {"(none)"}]
    frame = figs.with_display_values(figs.in_display_units(summary), split)
    facet_values = figs.category_order(frame, summary, facet) if facet != "(none)" else [None]
    hover = ["study", "trial_id", "status", "epochs", *[p for p in params if p not in (colour, facet)][:6]]
    fig = px.scatter(frame, x=x, y=y, color=None if colour == "(none)" else colour,
                     color_discrete_map=cmap.of(colour),
                     category_orders={c: figs.category_order(frame, summary, c) for c in split},
                     facet_col=None if facet == "(none)" else facet,
                     hover_data=hover, log_x=log_x, render_mode="svg" if len(frame) <= 2000 else "webgl",
                     labels=figs.labels(frame.columns))
    fig.update_xaxes(matches=None, showticklabels=True)  # each facet its own x range: one outlier squeezes none
    x_mode, y_mode = _mode(x, specs), _mode(y, specs)
    for k, value in enumerate(facet_values, 1):
        part = frame if value is None else frame[frame[facet] == value]
        trace = _pareto_trace(part, x, y, x_mode, y_mode)
        trace.showlegend = k == 1
        fig.add_trace(trace, row=1, col=k)
    st.caption(dd.as_text(f"{len(frame)} trials; Pareto front: {figs.axis_title(y)} {y_mode}, "
                          f"{figs.axis_title(x)} {x_mode}"))
    st.plotly_chart(fig, key="compare_scatter")

    if params:
        sections.by_hyperparameter(summary, frame, metrics, y, params, colour, cmap)
    else:
        st.info("All trials share the same hyperparameters.")
    sections.learning_curves(trials, summary, colour, cmap)
    sections.baseline_intervals(trials, summary, objectives(specs), params)


def _group_name(column: str) -> str:
    return "(none)" if column == "(none)" else column_name(column)
