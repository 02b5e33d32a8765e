"""deqlab dashboard: compare the trials of one or many studies (read-only over their results).

    deqlab dashboard results/                      # binds 127.0.0.1:8501
    streamlit run dashboard/app.py -- results/my_study

Study directories come from $DEQLAB_DASHBOARD_DIRS (os.pathsep-separated; what
`deqlab dashboard` sets), else the script arguments, else ./results. A
results root expands to the studies under it.

Data comes only through `deqlab.results`; the shaping lives in `deqlab.report`
(views, figures, tables), so it is tested and timed without Streamlit. One
module per page: overview.py, compare.py (+ compare_sections.py), trial_pages.py,
export_page.py. Loading is cached on a digest of the files' names, sizes and mtimes:
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
import streamlit as st

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:  # this folder's modules, under `streamlit run` and AppTest alike
    sys.path.insert(0, HERE)
import compare  # noqa: E402
import compare_sections as sections  # noqa: E402
import export_page  # noqa: E402
import overview  # noqa: E402
import trial_pages  # noqa: E402
from compare_sections import objectives  # noqa: E402

from deqlab.report import figures as figs  # noqa: E402
from deqlab.report import tables as export  # noqa: E402
from deqlab.report import views as dd  # noqa: E402
from deqlab.results import STATUSES, TableCache, column_name, load, load_spec, load_train_config, value_name  # noqa: E402

PAGES = ("Overview", "Compare", "Search", "Trial detail", "Depth view", "Export")


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
            specs[d] = load_spec(d) or load_train_config(d)  # a `deqlab train` run: its config
        except ValueError as exc:
            specs[d] = {}
            problems.append(str(exc))
    return res.trials, export.final_epochs(res.trials, statuses=None), problems, specs


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
        picked = st.sidebar.multiselect(dd.as_text(column_name(col)), values, default=values, key=f"filter:{col}",
                                        format_func=lambda v, c=col: value_name(c, v))
        if len(picked) < len(values):
            selected[col] = picked
    for col, (low, high) in ranges.items():
        # stops log-spaced over a log-uniform range (a tolerance), and every stop a real filter value
        stops = dd.range_steps(low, high)
        value = st.sidebar.select_slider(dd.as_text(column_name(col)), stops, value=(stops[0], stops[-1]),
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


# --------------------------------------------------------------------------- main


def main() -> None:
    st.set_page_config(page_title="deqlab", layout="wide")
    dirs = dd.study_dirs(requested_dirs())
    signature = dd.signature(dirs)
    trials, summary, problems, specs = load_results(tuple(dirs), signature)
    page = st.sidebar.radio("Page", PAGES, key="page", bind="query-params")
    st.sidebar.caption(dd.as_text("Results: " + ", ".join(dirs)))
    watch(dirs, signature)
    for problem in problems:  # paths and messages from the files: shown as text, never as Markdown
        st.warning(dd.as_text(problem))
    selected, statuses, ranges = sidebar_filters(summary)
    shown = dd.apply_filters(summary, selected, statuses, ranges)
    cmap = figs.ColourMap(summary, ["study", *dd.hyperparameters(summary)])  # all trials: colours survive filters
    if page == "Overview":
        overview.page_overview(dirs, summary, specs)
    elif page == "Compare":
        compare.page_compare(shown, specs, dd.varying_params(summary), trials, cmap)
    elif page == "Search":  # its own page: Optuna takes seconds to import, Compare stays quick
        sections.search_analysis(shown, objectives(specs), dd.varying_params(summary))
    elif page == "Trial detail":
        trial_pages.page_trial(dirs, trials, shown)
    elif page == "Depth view":
        trial_pages.page_depth(dirs, shown)
    else:
        export_page.page_export(trials, shown, specs, summary)


main()
