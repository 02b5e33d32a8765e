"""The Trial detail and Depth view pages: one trial's curves, traces, hyperparameters, provenance and
hidden states."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from deqlab.report import figures as figs
from deqlab.report import views as dd
from deqlab.results import PROVENANCE, load_states, load_trial_traces, value_name


def page_trial(dirs, trials, summary):
    st.header("Trial detail")
    if summary.empty:
        st.info("No trials match the filters.")
        return
    ordered = summary.sort_values(["study", "trial_id"])
    keys = list(zip(ordered["study"], ordered["trial_id"]))
    status = dict(zip(keys, ordered["status"]))
    label = {k: figs.trial_label(r) for k, (_, r) in zip(keys, ordered.iterrows())}
    pick = st.selectbox("trial", keys, format_func=label.get, key="trial_pick")
    study, trial_id = pick
    hist = dd.trial_history(trials, study, trial_id)
    row = hist.iloc[-1]
    if isinstance(row.get("error"), str) and row["error"]:
        st.error(dd.as_text(f"{status[pick]}: {row['error']}"))  # text from a file: never Markdown
    hist = figs.in_display_units(hist[hist["epoch"] >= 0])
    if hist.empty:
        st.info("This trial ended before its first epoch.")
    else:
        fig = figs.trial_curves(hist)
        st.plotly_chart(fig, key="curves")

    st.subheader("Convergence traces")
    folder = dd.trial_folder(dirs, study, trial_id)
    try:
        traces = load_trial_traces(folder, trial_id) if folder else pd.DataFrame()
    except ValueError as exc:
        st.warning(dd.as_text(exc))
        traces = pd.DataFrame()
    if traces.empty:
        st.info("No residual traces for this trial.")
    else:
        tol = pd.to_numeric(pd.Series([row.get("param.deq.tol")]), errors="coerce").iloc[0]
        st.plotly_chart(figs.residual_figure(traces, tol), key="traces")
        st.caption("Dotted line: the trial's stopping tolerance (deq.tol); the forward solve stops below it.")

    left, right = st.columns(2)
    params = {dd.short_name(c): row[c] for c in dd.param_columns(summary) if c in row}
    left.subheader("Hyperparameters")
    left.dataframe(pd.DataFrame({"name": list(params), "value": [value_name(k, v) for k, v in params.items()]}),
                   hide_index=True)
    right.subheader("Provenance")
    prov = {k: row[k] for k in ("study", "trial_id", "status", *PROVENANCE) if k in row}
    right.dataframe(pd.DataFrame({"field": list(prov), "value": [value_name(k, v) for k, v in prov.items()]}),
                    hide_index=True)


def page_depth(dirs, summary):
    st.header("Depth view")
    recorded = {d: dd.trials_with_states(d) for d in dirs}  # one listing per study directory, local or S3
    candidates = []
    for study, trial_id in sorted(zip(summary["study"], summary["trial_id"])):
        folder = dd.trial_folder(dirs, study, trial_id)
        if trial_id in recorded.get(folder, ()):
            candidates.append((study, trial_id, folder))
    if not candidates:
        st.info("No trial recorded depth states. Set `depth_states: K` in a training config to record the hidden "
                "states of a fixed batch after 0..K applications of the cell.")
        return
    pick = st.selectbox("trial", candidates, format_func=lambda c: f"{c[0]} / {c[1]}", key="depth_pick")
    try:
        states = load_states(pick[2], pick[1])
    except ValueError as exc:
        st.warning(dd.as_text(exc))
        return
    epochs = sorted(int(e) for e in states["epoch"].unique())
    epoch = st.selectbox("epoch", epochs, index=len(epochs) - 1, key="depth_epoch")
    proj, ratio = dd.pca_states(states, epoch)
    steps = sorted(int(s) for s in proj["step"].unique())
    pad = lambda lo, hi: (lo - 0.05 * (hi - lo + 1e-12), hi + 0.05 * (hi - lo + 1e-12))  # noqa: E731
    ranges = dict(range_x=pad(proj["pc1"].min(), proj["pc1"].max()), range_y=pad(proj["pc2"].min(), proj["pc2"].max()))
    labels = sorted(proj["label"].unique(), key=dd.sort_key)
    common = dict(x="pc1", y="pc2", color="label", category_orders={"label": labels}, hover_data=["sample"],
                  labels={"pc1": f"PC1 ({ratio[0]:.0%} of variance)", "pc2": f"PC2 ({ratio[1]:.0%})"}, **ranges)
    st.caption("Hidden states of a fixed test batch after k applications of the cell from z0, projected on the two "
               "principal components of all steps together (one basis, so steps are comparable), coloured by class.")
    if st.toggle("animate over steps", value=False, key="depth_animate"):
        fig = px.scatter(proj, animation_frame="step", **common)
    else:
        step = st.select_slider("solver step k", steps, value=steps[-1], key="depth_step")
        fig = px.scatter(proj[proj["step"] == step], **common)
    st.plotly_chart(fig, key="depth_scatter")
