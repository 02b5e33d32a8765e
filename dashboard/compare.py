"""The Compare page: a scatter of two metrics with its Pareto front (`figures.compare_scatter`, also
`StudyResult.figure`); the sections below it live in compare_sections.py."""

from __future__ import annotations

import streamlit as st

import compare_sections as sections
from compare_sections import objectives
from deqlab.report import figures as figs
from deqlab.report import views as dd
from deqlab.results import column_name


def _mode(metric, specs):
    return dd.mode_of(metric, objectives(specs))


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

    hover = ["study", "trial_id", "status", "epochs", *[p for p in params if p not in (colour, facet)][:6]]
    x_mode, y_mode = _mode(x, specs), _mode(y, specs)
    fig = figs.compare_scatter(summary, x, y, None if colour == "(none)" else colour, cmap, x_mode=x_mode,
                               y_mode=y_mode, facet=None if facet == "(none)" else facet, hover=hover, log_x=log_x)
    st.caption(dd.as_text(f"{len(summary)} trials; Pareto front: {figs.axis_title(y)} {y_mode}, "
                          f"{figs.axis_title(x)} {x_mode}"))
    st.plotly_chart(fig, key="compare_scatter")

    if params:
        sections.by_hyperparameter(summary, metrics, y, params, colour, cmap)
    else:
        st.info("All trials share the same hyperparameters.")
    sections.learning_curves(trials, summary, colour, cmap)
    sections.baseline_intervals(trials, summary, objectives(specs), params)


def _group_name(column: str) -> str:
    return "(none)" if column == "(none)" else column_name(column)
