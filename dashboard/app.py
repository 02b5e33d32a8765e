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

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # this folder's modules, under `streamlit run` and AppTest alike
    sys.path.insert(0, HERE)
import compare_sections as sections  # noqa: E402

from deqlab import dashboard_data as dd
from deqlab import dashboard_figures as figs
from deqlab import export
from deqlab.display import column_name, value_name
from deqlab.results import PROVENANCE, STATUSES, TableCache, load, load_spec, load_states, load_trial_traces

PAGES = ("Overview", "Compare", "Search", "Trial detail", "Depth view", "Export")
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
    if not summary.empty and summary["study"].nunique() > 1:
        choices = {"study": sorted(summary["study"].unique()), **choices}
    selected, chosen_ranges = {}, {}
    for col, values in choices.items():
        picked = st.sidebar.multiselect(column_name(col), values, default=values, key=f"filter:{col}",
                                        format_func=lambda v, c=col: value_name(c, v))
        if len(picked) < len(values):
            selected[col] = picked
    for col, (low, high) in ranges.items():
        # stops log-spaced over a log-uniform range (a tolerance), and every stop a real filter value
        stops = dd.range_steps(low, high)
        value = st.sidebar.select_slider(column_name(col), stops, value=(stops[0], stops[-1]),
                                         format_func=lambda v: f"{v:.3g}", key=f"filter:{col}")
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
            table["best test acc. (%)"] = (100 * done.groupby("study")["test_acc"].max()).round(1)
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
            best["value"] = [v * export.metric_info(m).scale for m, v in zip(metric, best["value"])]
            best["objective"] = [f"{figs.axis_title(m)} {'↑' if goals.get(m) == 'max' else '↓'}" for m in metric]
            st.dataframe(best, hide_index=True, column_config={"value": st.column_config.NumberColumn(format="%.4g")})
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
    return sections.mode_of(metric, objectives(specs))


def varying_params(summary) -> list[str]:
    return [c for c in dd.hyperparameters(summary) if summary[c].nunique(dropna=False) > 1]


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
    x = c1.selectbox("x", metrics, index=sections.default_index(metrics, ["nfe_fwd", "total_time_s"]), format_func=figs.axis_title,
                     key="cmp_x")
    y = c2.selectbox("y", metrics, index=sections.default_index(metrics, ["test_acc"]), format_func=figs.axis_title, key="cmp_y")
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
    st.caption(f"{len(frame)} trials; Pareto front: {figs.axis_title(y)} {y_mode}, {figs.axis_title(x)} {x_mode}")
    st.plotly_chart(fig, key="compare_scatter")

    if params:
        sections.by_hyperparameter(summary, frame, metrics, y, params, colour, cmap)
    else:
        st.info("All trials share the same hyperparameters.")
    sections.learning_curves(trials, summary, colour, cmap)
    sections.baseline_intervals(trials, summary, objectives(specs), params)


def _group_name(column: str) -> str:
    return "(none)" if column == "(none)" else column_name(column)


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
        st.error(f"{status[pick]}: {row['error']}")
    hist = figs.in_display_units(hist[hist["epoch"] >= 0])
    if hist.empty:
        st.info("This trial ended before its first epoch.")
    else:
        fig = figs.trial_curves(hist)
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
    by = c1.multiselect("group by", groups, default=default_by, key="exp_by", format_func=column_name)
    chosen = c2.multiselect("metrics", metrics, default=default_metrics, key="exp_metrics", format_func=figs.axis_title)
    baseline, ratio_of = None, None
    if by:
        b1, b2, b3 = st.columns(3)
        base_col = b1.selectbox("baseline column", ["(none)", *by], key="exp_base_col", format_func=column_name)
        if base_col != "(none)":
            col = export.resolve_column(summary, base_col)
            values = sorted(summary[col].astype(str).unique(), key=dd.sort_key)
            baseline = {base_col: b2.selectbox("baseline value", values, key="exp_base_value",
                                               format_func=lambda v: value_name(base_col, v))}
            times = [i for i, m in enumerate(chosen) if m.endswith("_time_s")]
            ratio_of = b3.selectbox("ratio of", chosen, index=times[0] if times else 0,
                                    key="exp_ratio_of", format_func=figs.axis_title) if chosen else None
    fmt = st.radio("format", export.FORMATS, horizontal=True, key="exp_fmt")
    latex = {}
    if fmt == "latex":
        l1, l2, l3 = st.columns([3, 1, 1])
        latex = dict(caption=l1.text_input("caption", key="exp_caption"), label=l2.text_input("label", key="exp_label"),
                     tabular_only=l3.checkbox("tabular only", key="exp_tabular"))
        st.caption("Preamble: \\usepackage{booktabs} \\usepackage{siunitx}. Group a continuous parameter in "
                   "bins by writing it as tol:4 in `deqlab export --by`.")
    if not by or not chosen:
        st.info("Choose at least one column to group by and one metric.")
        return
    try:
        table = export.aggregate(rows, by, chosen, baseline=baseline, ratio_metric=ratio_of, modes=objectives(specs))
    except ValueError as exc:
        st.warning(str(exc))
        return
    for warning in table.warnings:
        st.warning(warning)
    texts = {f: export.render(table, f, **(latex if f == "latex" else {})) for f in export.FORMATS}
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
    cmap = figs.ColourMap(summary, ["study", *dd.hyperparameters(summary)])  # all trials: colours survive filters
    if page == "Overview":
        page_overview(dirs, summary, specs)
    elif page == "Compare":
        page_compare(shown, specs, varying_params(summary), trials, cmap)
    elif page == "Search":  # its own page: Optuna takes seconds to import, Compare stays quick
        sections.search_analysis(shown, objectives(specs), varying_params(summary))
    elif page == "Trial detail":
        page_trial(dirs, trials, shown)
    elif page == "Depth view":
        page_depth(dirs, shown)
    else:
        page_export(trials, shown, specs, summary)


main()
