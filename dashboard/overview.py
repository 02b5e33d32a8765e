"""The Overview page: studies by status, timeline, best trials per objective, failures, the specs."""

from __future__ import annotations

import plotly.express as px
import streamlit as st
import yaml

from compare_sections import objectives
from deqlab.report import figures as figs
from deqlab.report import views as dd
from deqlab.results import STATUSES, Status, metric_info


def page_overview(dirs, summary, specs):
    st.header("Overview")
    if summary.empty:
        st.info(dd.as_text("No trial files yet under " + ", ".join(dirs) + ". Pages fill in as trials write their "
                           "results."))
    else:
        counts = summary.groupby(["study", "status"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=[s for s in STATUSES if s in counts.columns])
        table = counts.assign(trials=counts.sum(axis=1), epochs=summary.groupby("study")["epochs"].max())
        headline = metric_info(dd.HEADLINE_METRIC)
        if headline.name in summary.columns:  # e.g. `best Test acc. (%)`, in the tables' units
            done = summary[summary["status"] == Status.COMPLETED]
            best = done.groupby("study")[headline.name].agg("max" if headline.mode == "max" else "min")
            table[f"best {headline.title}"] = (headline.scale * best).round(1)
        st.subheader("Studies")
        st.dataframe(table.reset_index(), hide_index=True)
        st.subheader("Trials by status")
        fig = px.bar(summary.groupby(["study", "status"]).size().reset_index(name="trials"),
                     x="study", y="trials", color="status", category_orders={"status": list(STATUSES)},
                     color_discrete_map=figs.STATUS_COLOURS, labels={"study": "Study", "trials": "trials (count)"})
        st.plotly_chart(fig, key="status_bar")
        spans = dd.timeline(summary)
        if len(spans):
            st.subheader("Timeline")
            st.plotly_chart(figs.timeline_figure(spans), key="timeline")
        st.subheader("Best trials per objective")
        goals = objectives(specs)
        best = dd.best_trials(summary, goals)
        if best.empty:
            st.info("No completed trials yet.")
        else:  # the tables' names and units: Test acc. (%) 95.8, not test_acc 0.958
            metric = best["objective"].str.rsplit(" (", n=1).str[0]
            best["value"] = [v * metric_info(m).scale for m, v in zip(metric, best["value"])]
            best["objective"] = [f"{figs.axis_title(m)} {'↑' if goals.get(m) == 'max' else '↓'}" for m in metric]
            st.dataframe(best, hide_index=True, column_config={"value": st.column_config.NumberColumn(format="%.4g")})
        failed = dd.failed_trials(summary)
        if len(failed):
            st.subheader("Failed trials")
            st.dataframe(failed, hide_index=True)
    st.subheader("Study spec")
    for d in dirs:
        with st.expander(dd.as_text(d), expanded=len(dirs) == 1):
            if specs.get(d):
                st.code(yaml.safe_dump(specs[d], sort_keys=False), language="yaml")
            else:
                st.caption("no study.yaml or train.yaml")
