"""Results on disk: one Parquet file per trial, written atomically, read back as DataFrames.

Layout of a study directory (DESIGN.md "Results"):

    <root>/<study>/study.yaml              the validated spec as run
    <root>/<study>/trials/<trial>.parquet  one row per epoch
    <root>/<study>/traces/<trial>.parquet  residual after each solver step (fixed eval batch)
    <root>/<study>/states/<trial>.parquet  hidden states after k solver steps (depth view), optional

Every write goes to a hidden temporary file in the same directory and is then
renamed over the target, so a reader (the dashboard, `deqlab ls`) never sees a
torn file and a killed run leaves at worst a stray temp file that readers skip.
`root` may be a local path or any URI pyarrow's filesystems understand
(s3://, gs://), so a cluster's trials land in shared storage.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

STATUSES = ("running", "completed", "pruned", "diverged", "failed")
METRICS = (
    "train_loss", "test_loss", "test_acc", "nfe_fwd", "nfe_bwd", "fwd_time_s", "bwd_time_s",
    "epoch_time_s", "converged_frac", "residual", "infer_time_s",
)
PROVENANCE = (
    "seed", "config_hash", "deqlab_version", "torch_version", "ray_version", "device", "num_workers", "started_at",
)
TRACE_COLUMNS = ("epoch", "phase", "step", "residual_max", "residual_mean")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,200}$")


def check_name(kind: str, name: str) -> str:
    """Study and trial names become path components: refuse anything that could escape the root."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid {kind} name {name!r}: use letters, digits and _ . = + - (no path separators, no '..')"
        )
    return name


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in str(root):
        return pafs.FileSystem.from_uri(str(root))
    return pafs.LocalFileSystem(), os.path.abspath(os.fspath(root))


def write_table_atomic(table: pa.Table, path: str, fs: Optional[pafs.FileSystem] = None) -> None:
    """Write a Parquet file so that readers see the old file or the new one, never a part."""
    if fs is None:
        fs, path = _filesystem(path)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:
            pass
        raise


def write_text_atomic(text: str, path: str) -> None:
    fs, path = _filesystem(path)
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    with fs.open_output_stream(tmp) as out:
        out.write(text.encode())
    fs.move(tmp, path)


@dataclass
class TrialWriter:
    """Accumulates one trial's rows and rewrites its files after every epoch.

    A trial's files are small (one row per epoch), so rewriting them whole keeps
    each write atomic without append semantics the object stores lack.
    """

    root: str
    study: str
    trial_id: str
    params: dict
    provenance: dict
    rows: list = field(default_factory=list)
    traces: list = field(default_factory=list)

    def __post_init__(self):
        check_name("study", self.study)
        check_name("trial", self.trial_id)
        self.fs, base = _filesystem(self.root)
        self.base = f"{base}/{self.study}"

    def add_epoch(self, epoch: int, metrics: dict, status: str = "running") -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        row = {"study": self.study, "trial_id": self.trial_id, "epoch": int(epoch), "status": status}
        row.update({f"param.{k}": _scalar(v) for k, v in self.params.items()})
        row.update({k: float(metrics[k]) if metrics.get(k) is not None else None for k in METRICS})
        row.update({k: v for k, v in metrics.items() if k not in METRICS and _is_scalar(v)})
        row.update(self.provenance)
        self.rows.append(row)

    def add_trace(self, epoch: int, phase: str, trace_max: Iterable[float], trace_mean: Iterable[float]) -> None:
        for step, (mx, mean) in enumerate(zip(trace_max, trace_mean)):
            self.traces.append({"study": self.study, "trial_id": self.trial_id, "epoch": int(epoch), "phase": phase,
                                "step": step, "residual_max": float(mx), "residual_mean": float(mean)})

    def set_status(self, status: str) -> None:
        """Mark the trial's final status on every row (a pruned trial's rows all say pruned)."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
        for row in self.rows:
            row["status"] = status

    def flush(self) -> None:
        if self.rows:
            write_table_atomic(pa.Table.from_pylist(self.rows), f"{self.base}/trials/{self.trial_id}.parquet", self.fs)
        if self.traces:
            write_table_atomic(pa.Table.from_pylist(self.traces), f"{self.base}/traces/{self.trial_id}.parquet", self.fs)

    def write_states(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        write_table_atomic(table, f"{self.base}/states/{self.trial_id}.parquet", self.fs)


def _is_scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def _scalar(v):
    """Hyperparameters become columns: nested values (dicts of options) are flattened to text."""
    return v if _is_scalar(v) else repr(v)


@dataclass
class Results:
    trials: pd.DataFrame
    traces: pd.DataFrame
    skipped: list


def _read_dir(fs: pafs.FileSystem, folder: str, skipped: list) -> list[pd.DataFrame]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        skipped.append(f"{folder}: {exc}")
        return []
    frames = []
    for info in sorted(infos, key=lambda i: i.path):
        name = info.base_name
        if info.type != pafs.FileType.File or name.startswith(".") or not name.endswith(".parquet"):
            continue  # temp files of a write in progress are hidden
        try:
            with fs.open_input_file(info.path) as f:
                frames.append(pq.read_table(f).to_pandas())
        except Exception as exc:  # a corrupt file must not hide the rest of the study
            skipped.append(f"{info.path}: {type(exc).__name__}: {exc}")
            warnings.warn(f"skipping unreadable results file {info.path}: {exc}", stacklevel=3)
    return frames


def load(paths) -> Results:
    """Load one or many study directories; unreadable files are skipped with a warning naming them."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    trials, traces, skipped = [], [], []
    for p in paths:
        fs, base = _filesystem(os.fspath(p))
        trials += _read_dir(fs, f"{base}/trials", skipped)
        traces += _read_dir(fs, f"{base}/traces", skipped)
    trial_df = pd.concat(trials, ignore_index=True) if trials else pd.DataFrame(columns=["study", "trial_id", "epoch", "status"])
    trace_df = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(columns=["study", "trial_id", *TRACE_COLUMNS])
    return Results(trial_df, trace_df, skipped)
