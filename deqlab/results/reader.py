"""Reading results back: `load` one or many study directories as DataFrames, one trial's traces or depth
states, a study's spec. Unreadable files are skipped with a warning naming them, never fatal."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Optional

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from .schema import KEYS, TRACE_COLUMNS, printable
from .snapshot import read_kind
from .store import STUDY_FILE, TRAIN_FILE, StudyStore


@dataclass
class Results:
    trials: pd.DataFrame
    traces: pd.DataFrame
    skipped: list


class TableCache:
    """Tables already read, keyed by file path and checked against its size and mtime.

    Pass one to `load(..., cache=)` from a long-lived reader (the dashboard):
    a refresh while a study runs then re-reads only the trials whose files
    were replaced, not all 10,000. Files that disappeared are dropped. A
    study's compaction snapshot is cached the same way (as the parsed
    snapshot, so a refresh does not decode it again).
    """

    def __init__(self):
        self._tables: dict[str, tuple[tuple, object]] = {}

    def __len__(self) -> int:
        return len(self._tables)

    def get(self, info: pafs.FileInfo):
        hit = self._tables.get(info.path)
        return hit[1] if hit is not None and hit[0] == (info.size, info.mtime_ns) else None

    def put(self, info: pafs.FileInfo, table) -> None:
        self._tables[info.path] = ((info.size, info.mtime_ns), table)

    def discard(self, path: str) -> None:
        self._tables.pop(path, None)

    def retain(self, folder: str, present: set) -> None:
        prefix = folder.rstrip("/") + "/"
        for path in [p for p in self._tables if p.startswith(prefix) and p not in present]:
            del self._tables[path]


def _frame(tables: list[pa.Table], columns: list[str]) -> pd.DataFrame:
    """One DataFrame from many per-trial tables, converted to pandas once (not once per file)."""
    if not tables:
        return pd.DataFrame(columns=columns)
    try:
        try:
            table = pa.concat_tables(tables)  # one schema everywhere (the usual case): no unification pass
        except pa.ArrowInvalid:
            table = pa.concat_tables(tables, promote_options="permissive")  # a column only some trials have
        return table.combine_chunks().to_pandas()  # one chunk per column converts ~5x faster than 10,000
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        # a hyperparameter is a number in one trial and text in another: pandas keeps both as objects
        return pd.concat([t.to_pandas() for t in tables], ignore_index=True)


def load(paths, *, traces: bool = True, cache: Optional[TableCache] = None) -> Results:
    """Load one or many study directories; unreadable files are skipped with a warning naming them.

    `traces=False` reads only the trials files (the comparison views need no
    traces); `load_trial_traces` then reads one trial's traces on demand.
    `cache` (a `TableCache`) lets a long-lived reader re-read only changed files.
    A study compacted by `compact` is read from its snapshot plus the per-trial
    files that changed since (same rows as reading every file; row order may
    differ). Its unreadable snapshot is skipped with a warning naming it.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    trials, trace_tables, skipped = [], [], []
    for p in paths:
        try:
            store = StudyStore(p)
            got = read_kind(store, "trials", skipped, cache), read_kind(store, "traces", skipped, cache) if traces else []
        except Exception as exc:  # whatever one study's folder holds, the other studies still load
            skipped.append(f"{p}: {type(exc).__name__}: {exc}")
            warnings.warn(f"skipping the study {printable(p)}: {printable(exc)}", stacklevel=2)
            continue
        trials += got[0]
        trace_tables += got[1]
    return Results(_frame(trials, list(KEYS)),
                   _frame(trace_tables, ["study", "trial_id", *TRACE_COLUMNS]), skipped)


def load_trial_traces(study_dir, trial_id: str) -> pd.DataFrame:
    """One trial's residual traces (empty when it has none); an unreadable file is a ValueError naming it."""
    frame = StudyStore(study_dir).read_trial_file("traces", trial_id)
    return frame if frame is not None else pd.DataFrame(columns=["study", "trial_id", *TRACE_COLUMNS])


def load_states(study_dir, trial_id: str) -> Optional[pd.DataFrame]:
    """One trial's depth states (epoch, step, sample, label, state), or None when it recorded none."""
    return StudyStore(study_dir).read_trial_file("states", trial_id)


def load_spec(study_dir) -> dict:
    """The study's spec (study.yaml: name, objectives, ...) as a mapping, {} when there is none; unreadable
    YAML is a ValueError naming it. Directories written before `deqlab train` saved its config as
    train.yaml may hold a TrainConfig dump here: callers read the keys they need defensively."""
    return StudyStore(study_dir).read_yaml(STUDY_FILE)


def load_train_config(study_dir) -> dict:
    """The TrainConfig a `deqlab train` run saved (train.yaml), {} when there is none."""
    return StudyStore(study_dir).read_yaml(TRAIN_FILE)
