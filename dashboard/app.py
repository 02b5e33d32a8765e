"""deqlab dashboard: compare the trials of one or many studies (read-only over their results).

    deqlab dashboard results/                      # binds 127.0.0.1:8501
    streamlit run dashboard/app.py -- results/my_study

Study directories come from $DEQLAB_DASHBOARD_DIRS (os.pathsep-separated; what
`deqlab dashboard` sets), else the script arguments, else ./results. A
results root expands to the studies under it.

Data comes only through `deqlab.results`; the shaping lives in
`deqlab.dashboard_data` and `deqlab.export`, so it is tested and timed without
Streamlit. Loading is cached on a digest of the files' names, sizes and mtimes:
a rerun with nothing changed costs one directory listing, and when a running
study replaces a trial file, a `TableCache` re-reads only that file. With
"Watch for new results" on, a fragment polls the digest and reruns the app
when it changes.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st
import yaml
from plotly.subplots import make_subplots

from deqlab import dashboard_data as dd
from deqlab import export
from deqlab.results import PROVENANCE, STATUSES, TableCache, load, load_spec, load_states, load_trial_traces

PAGES = ("Overview", "Compare", "Trial detail", "Depth view", "Export")
FRONT = "Pareto front"
DEFAULT_OBJECTIVES = {"test_acc": "max"}


def requested_dirs() -> list[str]:
    env = os.environ.get("DEQLAB_DASHBOARD_DIRS")
    if env:
        return dd.split_dirs(env)
    return sys.argv[1:] or ["results"]


# --------------------------------------------------------------------------- loading (cached)


@st.cache_resource
def _reader() -> tuple[TableCache, threading.Lock]:
    """One table cache per server process, shared by every browser session."""
    return TableCache(), threading.Lock()


@st.cache_data(max_entries=4, show_spinner="Reading results...")
def load_results(dirs: tuple[str, ...], signature: str):
    """(trials, one row per trial, problems, specs); `signature` is the cache key that changes with the files."""
    cache, lock = _reader()
    with lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unreadable files are listed on the page instead
        res = load(list(dirs), traces=False, cache=cache)
    problems = [f"Skipped unreadable results file {s}" for s in res.skipped]
    specs = {}
    for d in dirs:
        try:
            specs[d] = load_spec(d)
        except ValueError as exc:
            specs[d] = {}
            problems.append(str(exc))
    return res.trials, export.final_epochs(res.trials, statuses=None), problems, specs


def objectives(specs: dict) -> dict[str, str]:
    return export.objective_modes(list(specs.values())) or dict(DEFAULT_OBJECTIVES)


def study_dir_of(dirs: list[str], study: str, trial_id: str) -> str | None:
    """The directory holding a trial's files: the one named after its study, else any that has the file."""
    for d in dirs:
        if Path(d).name == study:
            return d
    for d in dirs:
        if "://" not in d and (Path(d) / "trials" / f"{trial_id}.parquet").is_file():
            return d
    return dirs[0] if dirs else None


# --------------------------------------------------------------------------- sidebar


def sidebar_filters(summary: pd.DataFrame):
    st.sidebar.header("Filters")
    present = [s for s in STATUSES if s in set(summary["status"])] if not summary.empty else []
    statuses = st.sidebar.multiselect("status", present, default=present, key="filter:status")
    choices, ranges = dd.filter_options(summary)
    selected, chosen_ranges = {}, {}
    for col, values in choices.items():
        picked = st.sidebar.multiselect(dd.short_name(col), values, default=values, key=f"filter:{col}")
        if len(picked) < len(values):
            selected[col] = picked
    for col, (low, high) in ranges.items():
        value = st.sidebar.slider(dd.short_name(col), low, high, (low, high), format="%.3g", key=f"filter:{col}")
        if tuple(value) != (low, high):
            chosen_ranges[col] = value
    return selected, statuses, chosen_ranges


def watch(dirs: list[str], signature: str) -> None:
    """Poll the files' digest in a fragment; rerun the whole app when a running study wrote something."""
    if not st.sidebar.toggle("Watch for new results", value=False, key="watch",
                             help="check the results files every 5 s and refresh when they change"):
        return

    @st.fragment(run_every=5)
    def poll():
        if dd.signature(dirs) != signature:
            st.rerun()

    poll()


# --------------------------------------------------------------------------- pages


def page_overview(dirs, summary, specs):
    st.header("Overview")
    if summary.empty:
        st.info("No trial files yet under " + ", ".join(dirs) + ". Pages fill in as trials write their results.")
    else:
        counts = summary.groupby(["study", "status"]).size().unstack(fill_value=0)
        counts = counts.reindex(columns=[s for s in STATUSES if s in counts.columns])
        table = counts.assign(trials=counts.sum(axis=1), epochs=summary.groupby("study")["epochs"].max())
        if "test_acc" in summary.columns:
            done = summary[summary["status"] == "completed"]
            table["best test_acc"] = done.groupby("study")["test_acc"].max()
        st.subheader("Studies")
        st.dataframe(table.reset_index(), hide_index=True)
        st.subheader("Trials by status")
        fig = px.bar(summary.groupby(["study", "status"]).size().reset_index(name="trials"),
                     x="study", y="trials", color="status", category_orders={"status": list(STATUSES)})
        st.plotly_chart(fig, key="status_bar")
        st.subheader("Best trials per objective")
        best = dd.best_trials(summary, objectives(specs))
        if best.empty:
            st.info("No completed trials yet.")
        else:
            st.dataframe(best, hide_index=True)
        failed = dd.failed_trials(summary)
        if len(failed):
            st.subheader("Failed trials")
            st.dataframe(failed, hide_index=True)
    st.subheader("Study spec")
    for d in dirs:
        with st.expander(d, expanded=len(dirs) == 1):
            if specs.get(d):
                st.code(yaml.safe_dump(specs[d], sort_keys=False), language="yaml")
            else:
                st.caption("no study.yaml")


def _pareto_trace(frame, x, y, x_mode, y_mode):
    on = frame[dd.pareto_mask(frame, x, y, x_mode, y_mode)].sort_values(x)
    return go.Scatter(x=on[x], y=on[y], mode="lines+markers", name=FRONT,
                      line=dict(color="black", width=1, dash="dot"),
                      marker=dict(symbol="circle-open", size=12, color="black"), hoverinfo="skip")


def _mode(metric, specs):
    return objectives(specs).get(metric) or export.metric_info(metric).mode or "max"


def varying_params(summary) -> list[str]:
    return [c for c in dd.param_columns(summary) if summary[c].nunique(dropna=False) > 1]


def page_compare(summary, specs, params):
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
    x = c1.selectbox("x", metrics, index=metrics.index("total_time_s") if "total_time_s" in metrics else 0, key="cmp_x")
    y = c2.selectbox("y", metrics, index=metrics.index("test_acc") if "test_acc" in metrics else 0, key="cmp_y")
    groups = ["(none)"] + params
    default_colour = next((i for i, c in enumerate(groups) if c.endswith(".init")), 0)
    colour = c3.selectbox("colour", groups, index=default_colour, format_func=dd.short_name, key="cmp_colour")
    facet = c4.selectbox("facet", groups, index=0, format_func=dd.short_name, key="cmp_facet")
    log_x = st.checkbox("log x", value=False, key="cmp_logx")

    frame = summary.copy()
    for col in {colour, facet} - {"(none)"}:
        frame[col] = frame[col].astype(str)
    facet_values = sorted(frame[facet].unique(), key=dd.sort_key) if facet != "(none)" else [None]
    hover = ["study", "trial_id", "status", "epochs", *[p for p in params if p not in (colour, facet)][:6]]
    fig = px.scatter(frame, x=x, y=y, color=None if colour == "(none)" else colour,
                     facet_col=None if facet == "(none)" else facet,
                     category_orders={facet: facet_values} if facet != "(none)" else None,
                     hover_data=hover, log_x=log_x, render_mode="svg" if len(frame) <= 2000 else "webgl",
                     labels={c: dd.short_name(c) for c in frame.columns})
    x_mode, y_mode = _mode(x, specs), _mode(y, specs)
    for k, value in enumerate(facet_values, 1):
        part = frame if value is None else frame[frame[facet] == value]
        trace = _pareto_trace(part, x, y, x_mode, y_mode)
        trace.showlegend = k == 1
        fig.add_trace(trace, row=1, col=k)
    st.caption(f"{len(frame)} trials; Pareto front: {y} {y_mode}, {x} {x_mode}")
    st.plotly_chart(fig, key="compare_scatter")

    st.subheader("By hyperparameter")
    if not params:
        st.info("All trials share the same hyperparameters.")
        return
    b1, b2, b3 = st.columns(3)
    metric = b1.selectbox("metric", metrics, index=metrics.index(y), key="box_metric")
    by = b2.selectbox("group by", params, format_func=dd.short_name, key="box_by",
                      index=next((i for i, c in enumerate(params) if c.endswith(".solver")), 0))
    kind = b3.radio("plot", ("box", "bar (mean)"), horizontal=True, key="box_kind")
    frame[by] = frame[by].astype(str)
    order = {by: sorted(frame[by].unique(), key=dd.sort_key)}
    split = None if colour in ("(none)", by) else colour
    if kind == "box":
        fig2 = px.box(frame, x=by, y=metric, color=split, points="all", category_orders=order,
                      labels={c: dd.short_name(c) for c in frame.columns})
    else:
        means = frame.groupby([by] + ([split] if split else []))[metric].agg(["mean", "std", "size"]).reset_index()
        fig2 = px.bar(means, x=by, y="mean", error_y="std", color=split, barmode="group", category_orders=order,
                      hover_data=["size"], labels={"mean": metric, **{c: dd.short_name(c) for c in means.columns}})
    st.plotly_chart(fig2, key="compare_box")


def page_trial(dirs, trials, summary):
    st.header("Trial detail")
    if summary.empty:
        st.info("No trials match the filters.")
        return
    ordered = summary.sort_values(["study", "trial_id"])
    keys = list(zip(ordered["study"], ordered["trial_id"]))
    status = dict(zip(keys, ordered["status"]))
    pick = st.selectbox("trial", keys, format_func=lambda k: f"{k[0]} / {k[1]} ({status[k]})", key="trial_pick")
    study, trial_id = pick
    hist = dd.trial_history(trials, study, trial_id)
    row = hist.iloc[-1]
    if isinstance(row.get("error"), str) and row["error"]:
        st.error(f"{status[pick]}: {row['error']}")
    hist = hist[hist["epoch"] >= 0]
    if hist.empty:
        st.info("This trial ended before its first epoch.")
    else:
        fig = make_subplots(rows=2, cols=2, subplot_titles=("accuracy", "loss", "NFE per sample", "time per epoch (s)"))
        panels = [(1, 1, ["test_acc"]), (1, 2, ["train_loss", "test_loss"]), (2, 1, ["nfe_fwd", "nfe_bwd"]),
                  (2, 2, ["epoch_time_s", "fwd_time_s", "bwd_time_s"])]
        for r, c, cols in panels:
            for col in cols:
                if col in hist.columns and hist[col].notna().any():
                    fig.add_trace(go.Scatter(x=hist["epoch"], y=hist[col], mode="lines+markers", name=col),
                                  row=r, col=c)
        fig.update_xaxes(title_text="epoch")
        fig.update_layout(height=560)
        st.plotly_chart(fig, key="curves")

    st.subheader("Convergence traces")
    folder = study_dir_of(dirs, study, trial_id)
    try:
        traces = load_trial_traces(folder, trial_id) if folder else pd.DataFrame()
    except ValueError as exc:
        st.warning(str(exc))
        traces = pd.DataFrame()
    if traces.empty:
        st.info("No residual traces for this trial.")
    else:
        traces = traces.assign(epoch=traces["epoch"].astype(str))
        fig = px.line(traces, x="step", y="residual_max", color="epoch", facet_col="phase", log_y=True, markers=True,
                      category_orders={"phase": ["fwd", "bwd"]}, labels={"residual_max": "max relative residual"})
        st.plotly_chart(fig, key="traces")

    left, right = st.columns(2)
    params = {dd.short_name(c): row[c] for c in dd.param_columns(hist if not hist.empty else summary) if c in row}
    left.subheader("Hyperparameters")
    left.dataframe(pd.DataFrame({"name": list(params), "value": [str(v) for v in params.values()]}), hide_index=True)
    right.subheader("Provenance")
    prov = {k: row[k] for k in ("study", "trial_id", "status", *PROVENANCE) if k in row}
    right.dataframe(pd.DataFrame({"field": list(prov), "value": [str(v) for v in prov.values()]}), hide_index=True)


def page_depth(dirs, summary):
    st.header("Depth view")
    recorded = {d: dd.trials_with_states(d) for d in dirs}  # one listing per study directory, local or S3
    candidates = []
    for study, trial_id in sorted(zip(summary["study"], summary["trial_id"])):
        folder = study_dir_of(dirs, study, trial_id)
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
        st.warning(str(exc))
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


def page_export(trials, summary, specs, everything):
    """`everything`: all trials' summary, so the group choices stay put while filters narrow `summary`."""
    st.header("Export")
    if summary.empty:
        st.info("No trials match the filters.")
        return
    rows = trials.merge(summary[["study", "trial_id"]], on=["study", "trial_id"])  # the filtered trials' epochs
    groups = [g for g in export.group_candidates(everything)
              if everything[export.resolve_column(everything, g)].nunique(dropna=False) > 1] or ["study"]
    default_by = [g for g in groups if g.endswith(("init", "solver"))] or groups[:1]
    metrics = [m for m in dd.numeric_metrics(summary)]
    wanted = [*objectives(specs), "nfe_fwd", "epoch_time_s"]
    default_metrics = [m for m in dict.fromkeys(wanted) if m in metrics] or metrics[:1]
    c1, c2 = st.columns(2)
    by = c1.multiselect("group by", groups, default=default_by, key="exp_by")
    chosen = c2.multiselect("metrics", metrics, default=default_metrics, key="exp_metrics")
    baseline, ratio_of = None, None
    if by:
        b1, b2, b3 = st.columns(3)
        base_col = b1.selectbox("baseline column", ["(none)", *by], key="exp_base_col")
        if base_col != "(none)":
            col = export.resolve_column(summary, base_col)
            values = sorted(summary[col].astype(str).unique(), key=dd.sort_key)
            baseline = {base_col: b2.selectbox("baseline value", values, key="exp_base_value")}
            times = [i for i, m in enumerate(chosen) if m.endswith("_time_s")]
            ratio_of = b3.selectbox("ratio of", chosen, index=times[0] if times else 0,
                                    key="exp_ratio_of") if chosen else None
    fmt = st.radio("format", export.FORMATS, horizontal=True, key="exp_fmt")
    if not by or not chosen:
        st.info("Choose at least one column to group by and one metric.")
        return
    try:
        table = export.aggregate(rows, by, chosen, baseline=baseline, ratio_metric=ratio_of, modes=objectives(specs))
    except ValueError as exc:
        st.warning(str(exc))
        return
    texts = {f: export.render(table, f) for f in export.FORMATS}
    st.code(texts[fmt], language={"latex": "latex", "markdown": "markdown", "csv": "text"}[fmt])
    if fmt == "markdown":
        with st.expander("preview"):
            st.markdown(texts["markdown"])
    cols = st.columns(3)
    for c, f, ext, mime in zip(cols, export.FORMATS, ("tex", "md", "csv"), ("text/x-tex", "text/markdown", "text/csv")):
        c.download_button(f"Download {f}", texts[f], file_name=f"comparison.{ext}", mime=mime, key=f"dl_{f}")


# --------------------------------------------------------------------------- main


def main() -> None:
    st.set_page_config(page_title="deqlab", layout="wide")
    dirs = dd.study_dirs(requested_dirs())
    signature = dd.signature(dirs)
    trials, summary, problems, specs = load_results(tuple(dirs), signature)
    page = st.sidebar.radio("Page", PAGES, key="page", bind="query-params")
    st.sidebar.caption("Results: " + ", ".join(dirs))
    watch(dirs, signature)
    for problem in problems:
        st.warning(problem)
    selected, statuses, ranges = sidebar_filters(summary)
    shown = dd.apply_filters(summary, selected, statuses, ranges)
    if page == "Overview":
        page_overview(dirs, summary, specs)
    elif page == "Compare":
        page_compare(shown, specs, varying_params(summary))
    elif page == "Trial detail":
        page_trial(dirs, trials, shown)
    elif page == "Depth view":
        page_depth(dirs, shown)
    else:
        page_export(trials, shown, specs, summary)


main()
