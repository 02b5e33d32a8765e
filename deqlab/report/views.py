"""Data shaping for the dashboard (`dashboard/app.py`), kept out of Streamlit so it can be tested and timed.

Everything here is a pure function of DataFrames from `deqlab.results`, plus
`signature`, the cache key that makes a running study refresh: it changes
whenever a results file is added, replaced or removed, and costs one listing
of the study folders (no file is opened).

    dirs = study_dirs(["results"])               # a results root expands to its studies
    res = load(dirs, traces=False)
    summary = final_epochs(res.trials, statuses=None)   # one row per trial, with total training time
    on_front = pareto_mask(summary, "total_time_s", "test_acc", "min", "max")
"""

from __future__ import annotations

import hashlib
import os
import re
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..results.schema import Status
from .render import markdown_text
from ..results.store import StudyStore, is_uri, join
from .tables import metric_candidates, sort_key

# The dashboard's default choices, by metric name (every one is in deqlab.results.schema.CATALOGUE, which
# gives its label, unit and direction; tests/test_results_schema.py checks it).
HEADLINE_METRIC = "test_acc"  # the Overview's best-per-study column
DEFAULT_OBJECTIVES = {HEADLINE_METRIC: "max"}  # when no study spec names objectives
DEFAULT_X = ("nfe_fwd", "total_time_s")  # the study's objectives and the CLI's Pareto front count solver steps
DEFAULT_Y = (HEADLINE_METRIC,)
CURVE_METRICS = ("test_acc", "test_loss", "train_loss", "nfe_fwd")  # learning curves
EXPORT_METRICS = ("nfe_fwd", "epoch_time_s")  # the Export page's defaults after the objectives
RATIO_METRICS = ("epoch_time_s",)  # the baseline comparison's default ratio


def as_text(value) -> str:
    """Text from results (an error, a path, a warning) for Streamlit's Markdown elements (st.error,
    st.warning, captions, widget labels), shown as the text it is (`render.markdown_text`): no link, image,
    HTML, emphasis, `:red[...]` or `$math$` can come of it."""
    return markdown_text(value)


def split_dirs(text: str) -> list[str]:
    """The dashboard's directory list from one environment variable, joined with os.pathsep: on POSIX
    that is ':', which a URI (s3://bucket/x) contains too, so a ':' followed by '//' does not split."""
    parts = re.split(r":(?!//)", text) if os.pathsep == ":" else text.split(os.pathsep)
    return [p for p in parts if p]


def study_dirs(paths: Sequence[str]) -> list[str]:
    """Study directories from the user's paths: a study itself, or a results root holding studies.

    A path (local or a URI such as s3://bucket/prefix) that is no study itself
    (`StudyStore.is_study`) but whose sub-folders are is a root (what `deqlab
    run --storage` fills). A path that does not exist is kept, so the pages can
    say it is empty.
    """
    out = []
    for p in paths:
        p = os.fspath(p)
        store = StudyStore(p)
        if not store.exists() or store.is_study():
            out.append(p)
            continue
        out.extend([join(p, c) for c in store.studies_below()] or [p])
    return list(dict.fromkeys(out))


def trials_with_states(study_dir: str) -> set[str]:
    """Trial ids with a depth-states file in a study directory, local or in object storage."""
    try:
        return StudyStore(study_dir).trial_ids("states")
    except OSError:
        return set()


def trial_folder(dirs: Sequence[str], study: str, trial_id: str) -> Optional[str]:
    """The directory holding a trial's files: the one named after its study, else a local one that has the
    file (a listing of object storage per trial would be slow), else the first."""
    for d in dirs:
        if os.path.basename(os.fspath(d).rstrip("/")) == study:
            return d
    for d in dirs:
        if not is_uri(d) and StudyStore(d).has("trials", trial_id):
            return d
    return dirs[0] if dirs else None


def signature(paths: Sequence[str]) -> str:
    """A digest of every results file's name, size and mtime: the dashboard's cache key."""
    h = hashlib.blake2b(digest_size=16)
    for p in paths:
        store = StudyStore(p)
        h.update(store.base.encode())
        infos, errors = store.listing()
        for error in errors:
            h.update(error.encode())
        for info in sorted(infos, key=lambda i: i.path):
            mtime = info.mtime_ns if info.mtime_ns is not None else 0
            h.update(f"{info.path}\0{info.size}\0{mtime}\0{info.type}\n".encode())
    return h.hexdigest()


def varying_params(summary: pd.DataFrame) -> list[str]:
    """Hyperparameters that take more than one value over the trials (colour, facet and group choices)."""
    return [c for c in hyperparameters(summary) if summary[c].nunique(dropna=False) > 1]


def param_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith("param.")]


def hyperparameters(frame: pd.DataFrame) -> list[str]:
    """`param.*` columns that are compared hyperparameters (not epochs or what to record)."""
    return [c for c in param_columns(frame) if c not in NOT_HYPERPARAMETERS]


def range_steps(low: float, high: float, count: int = 41) -> list[float]:
    """Slider stops from low to high: log-spaced for positive values spanning more than 10x (a tolerance from
    1e-4 to 1e-2 gets as many stops per decade), else evenly; the ends are exact so the full range keeps every row."""
    if high <= low:
        return [low]
    if low > 0 and high > 10 * low:
        inner = np.geomspace(low, high, count)
    else:
        inner = np.linspace(low, high, count)
    stops = [float(f"{v:.3g}") for v in inner[1:-1]]
    return [low, *sorted(set(s for s in stops if low < s < high)), high]


def short_name(column: str) -> str:
    """`param.deq.init` -> `deq.init` for labels; other columns unchanged."""
    return column[len("param."):] if column.startswith("param.") else column


MAX_CHOICES = 12  # a numeric hyperparameter with more distinct values is filtered by a range, not a list
MAX_FLOAT_CHOICES = 6  # a float with more is sampled (a log-uniform tolerance): a range even with 7 trials
# Settings that are not compared hyperparameters (how long to train, what to record): no filter, colour or facet.
NOT_HYPERPARAMETERS = {"param.epochs", "param.pretrain_epochs", "param.depth_states"}


def filter_options(summary: pd.DataFrame) -> tuple[dict[str, list], dict[str, tuple[float, float]]]:
    """The sidebar's filters: `param.*` columns with more than one value.

    Returns (choices, ranges): a column with few values gets a list of them in
    display order; a numeric one with many (a sampled learning rate) gets its
    (min, max), so 10,000 trials do not mean a 10,000-option list.
    """
    choices, ranges = {}, {}
    for col in hyperparameters(summary):
        values = summary[col].dropna().unique().tolist()
        if len(values) <= 1:
            continue
        numeric = pd.api.types.is_numeric_dtype(summary[col]) and not pd.api.types.is_bool_dtype(summary[col])
        sampled = pd.api.types.is_float_dtype(summary[col]) and len(values) > MAX_FLOAT_CHOICES
        if numeric and (len(values) > MAX_CHOICES or sampled):
            ranges[col] = (float(min(values)), float(max(values)))
        else:
            choices[col] = sorted(values, key=sort_key)
    return choices, ranges


def apply_filters(frame: pd.DataFrame, selected: Mapping[str, Sequence], statuses: Optional[Sequence[str]] = None,
                  ranges: Optional[Mapping[str, tuple[float, float]]] = None) -> pd.DataFrame:
    """Rows whose value of every filtered column is among the selected ones (or in its range), with an allowed status.

    Works on per-epoch frames too: a trial's rows share its hyperparameters, and
    its final status is written on every row. A column missing from the frame
    is not a filter on it.
    """
    mask = np.ones(len(frame), dtype=bool)
    for col, values in selected.items():
        if col in frame.columns:
            mask &= frame[col].isin(list(values)).to_numpy()
    for col, (low, high) in (ranges or {}).items():
        if col in frame.columns:
            mask &= frame[col].between(low, high).to_numpy()
    if statuses is not None and "status" in frame.columns:
        mask &= frame["status"].isin(list(statuses)).to_numpy()
    return frame[mask]


def pareto_mask(frame: pd.DataFrame, x: str, y: str, x_mode: str = "min", y_mode: str = "max") -> np.ndarray:
    """True for rows no other row beats on both x and y (ties kept); rows with a missing value never are.

    One sort and one sweep: O(n log n), fine for 10,000 trials on every rerun.
    """
    for mode in (x_mode, y_mode):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    if frame.empty:
        return np.zeros(0, dtype=bool)
    xs = pd.to_numeric(frame[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(frame[y], errors="coerce").to_numpy(dtype=float)
    xs = xs if x_mode == "min" else -xs  # both minimised from here on
    ys = ys if y_mode == "min" else -ys
    ok = np.isfinite(xs) & np.isfinite(ys)
    mask = np.zeros(len(frame), dtype=bool)
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((ys[idx], xs[idx]))]  # by x, then y
    best_y = np.inf
    i = 0
    while i < len(order):  # points sharing an x: only those with the group's best y can be on the front
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        group = order[i:j]
        gmin = ys[group].min()
        if gmin < best_y:
            mask[group[ys[group] == gmin]] = True
            best_y = gmin
        i = j
    return mask


def numeric_metrics(summary: pd.DataFrame) -> list[str]:
    """Metrics one can plot, the training-time total first."""
    cols = metric_candidates(summary)
    return [c for c in ("total_time_s",) if c in cols] + [c for c in cols if c != "total_time_s"]


def trial_history(trials: pd.DataFrame, study: str, trial_id: str) -> pd.DataFrame:
    """One trial's rows, by epoch."""
    rows = trials[(trials["study"] == study) & (trials["trial_id"] == trial_id)]
    return rows.sort_values("epoch").reset_index(drop=True)


def failed_trials(summary: pd.DataFrame) -> pd.DataFrame:
    """Failed trials and why (the exception the trial raised): study, trial, error."""
    cols = ["study", "trial_id", "error"]
    if summary.empty or "status" not in summary.columns:
        return pd.DataFrame(columns=cols)
    failed = summary[summary["status"] == Status.FAILED].copy()
    failed["error"] = failed["error"] if "error" in failed.columns else None
    return failed[cols].sort_values(["study", "trial_id"]).reset_index(drop=True)


def timeline(summary: pd.DataFrame) -> pd.DataFrame:
    """When each trial ran: study, trial_id, status, start (its `started_at`), finish (start + the wall time
    of its epochs). Trials without a start time (a driver-written row for a trial that never trained) are left
    out: a bar needs both ends."""
    cols = ["study", "trial_id", "status", "start", "finish"]
    need = {"study", "trial_id", "status", "started_at", "total_time_s"}
    if summary.empty or not need <= set(summary.columns):
        return pd.DataFrame(columns=cols)
    start = pd.to_datetime(summary["started_at"], errors="coerce", utc=True, format="%Y-%m-%dT%H:%M:%S%z")
    seconds = pd.to_numeric(summary["total_time_s"], errors="coerce")
    frame = summary[["study", "trial_id", "status"]].assign(start=start, finish=start + pd.to_timedelta(seconds, "s"))
    return frame.dropna(subset=["start", "finish"]).sort_values(["start", "study", "trial_id"]).reset_index(drop=True)


def best_trials(summary: pd.DataFrame, objectives: Mapping[str, str], n: int = 3) -> pd.DataFrame:
    """The n best completed trials per objective metric (objective, rank, study, trial, value)."""
    done = summary[summary["status"] == Status.COMPLETED] if "status" in summary.columns else summary
    rows = []
    for metric, mode in objectives.items():
        if metric not in done.columns:
            continue
        ranked = done.dropna(subset=[metric]).sort_values(metric, ascending=(mode == "min"), kind="stable").head(n)
        for rank, (_, r) in enumerate(ranked.iterrows(), 1):
            rows.append({"objective": f"{metric} ({mode})", "rank": rank, "study": r["study"],
                         "trial_id": r["trial_id"], "value": r[metric]})
    return pd.DataFrame(rows, columns=["objective", "rank", "study", "trial_id", "value"])


def pca_states(states: pd.DataFrame, epoch: Optional[int] = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Project one epoch's hidden states onto two principal components shared by every step.

    One basis for all steps (fitted on the states of every step together), so
    the picture of clusters forming over depth is comparable step to step.
    Returns (frame with step, sample, label, pc1, pc2; explained variance ratio of the two).
    """
    if states is None or states.empty:
        raise ValueError("this trial recorded no depth states (set depth_states > 0 in its config)")
    if epoch is None:
        epoch = int(states["epoch"].max())
    rows = states[states["epoch"] == epoch].sort_values(["step", "sample"])
    if rows.empty:
        raise ValueError(f"no depth states for epoch {epoch}; epochs present: "
                         f"{', '.join(str(e) for e in sorted(states['epoch'].unique()))}")
    x = np.asarray(np.stack(rows["state"].map(lambda v: np.asarray(v, dtype=np.float64)).to_list()))
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    k = min(2, vt.shape[0])
    proj = x @ vt[:k].T
    if k < 2:
        proj = np.column_stack([proj, np.zeros(len(proj))])
    var = s ** 2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    out = pd.DataFrame({"step": rows["step"].to_numpy(), "sample": rows["sample"].to_numpy(),
                        "label": rows["label"].astype(str).to_numpy(), "pc1": proj[:, 0], "pc2": proj[:, 1]})
    return out, np.pad(ratio, (0, 2 - len(ratio)))
