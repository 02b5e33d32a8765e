"""Writing a trial's results: `TrialWriter` (the training loop's sink) and `finalize_trial` (the driver's
record of how a trial ended when the trial itself could not say)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.parquet as pq

from .schema import FINAL_STATUSES, METRICS, STATUSES, Status
from .store import StudyStore, check_name, read_table


def is_scalar(v) -> bool:
    return isinstance(v, (int, float, str, bool)) or v is None


def scalar(v):
    """Hyperparameters become columns: nested values (dicts of options) are flattened to text."""
    return v if is_scalar(v) else repr(v)


def _check_status(status: str, valid: tuple, what: str = "status") -> None:
    if status not in valid:
        raise ValueError(f"unknown {what} {status!r}; valid: {', '.join(valid)}")


def _table(rows: list) -> pa.Table:
    """Rows as a table with every column any row has (`from_pylist` takes the first row's keys only; a PBT
    clone's later rows add columns its earlier ones lack)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return pa.Table.from_pylist(rows) if all(len(r) == len(columns) for r in rows) else \
        pa.Table.from_pylist([{k: r.get(k) for k in columns} for r in rows])


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
        self.store = StudyStore.of(self.root, self.study)
        check_name("trial", self.trial_id)
        self.fs, self.base = self.store.fs, self.store.base

    def add_epoch(self, epoch: int, metrics: dict, status: str = Status.RUNNING) -> None:
        _check_status(status, STATUSES)
        row = {"study": self.study, "trial_id": self.trial_id, "epoch": int(epoch), "status": str(status)}
        row.update({f"param.{k}": scalar(v) for k, v in self.params.items()})
        row.update({k: float(metrics[k]) if metrics.get(k) is not None else None for k in METRICS})
        row.update({k: v for k, v in metrics.items() if k not in METRICS and is_scalar(v)})
        row.update(self.provenance)
        self.rows.append(row)

    def add_trace(self, epoch: int, phase: str, trace_max: Iterable[float], trace_mean: Iterable[float]) -> None:
        for step, (mx, mean) in enumerate(zip(trace_max, trace_mean)):
            self.traces.append({"study": self.study, "trial_id": self.trial_id, "epoch": int(epoch), "phase": phase,
                                "step": step, "residual_max": float(mx), "residual_mean": float(mean)})

    def keep_until(self, epoch: int) -> None:
        """Continue a trial from its checkpoint after `epoch`: take back the rows and traces its files hold up
        to that epoch, as they are (a later epoch's, written before the checkpoint that would have followed it,
        is trained again and written once)."""
        for kind, rows in (("trials", self.rows), ("traces", self.traces)):
            if not self.store.has(kind, self.trial_id):
                continue
            table = read_table(self.fs, self.store.file(kind, self.trial_id))
            if isinstance(table, Exception):  # atomic writes leave none torn; a damaged one is rewritten whole
                continue
            kept = [r for r in table.to_pylist() if 0 <= r["epoch"] <= epoch]
            rows[:] = kept + [r for r in rows if r["epoch"] > epoch]

    def set_status(self, status: str) -> None:
        """Mark the trial's final status on every row (a pruned trial's rows all say pruned)."""
        _check_status(status, STATUSES)
        for row in self.rows:
            row["status"] = str(status)

    def flush(self) -> None:
        if self.rows:
            self.store.write_table(_table(self.rows), "trials", self.trial_id)
        if self.traces:
            self.store.write_table(_table(self.traces), "traces", self.trial_id)

    def write_states(self, frame) -> None:
        """One trial's depth states (a DataFrame: epoch, step, sample, label, state)."""
        self.store.write_table(pa.Table.from_pandas(frame, preserve_index=False), "states", self.trial_id)


def finalize_trial(root: str, study: str, trial_id: str, status: str, *, error: Optional[str] = None,
                   params: Optional[dict] = None, provenance: Optional[dict] = None) -> str:
    """Record how a trial ended when the trial itself could not (pruned, killed, crashed).

    The driver calls this after Ray Tune stops or loses a trial. A file that
    already carries a final status written by the trial (completed, diverged)
    keeps it: only rows still marked running are relabelled. A trial that
    failed before its first epoch gets one row with epoch -1 and no metrics,
    so it is still counted. Returns the status on disk afterwards.
    """
    _check_status(status, FINAL_STATUSES, "final status")
    status = str(status)
    store = StudyStore.of(root, study)
    check_name("trial", trial_id)
    try:  # read as it is (not checked like `load` does): only its status column is changed
        with store.fs.open_input_file(store.file("trials", trial_id)) as f:
            frame = pq.read_table(f).to_pandas()
    except FileNotFoundError:
        frame = None
    except (OSError, pa.ArrowException):
        frame = None  # torn or unreadable: replaced below by the record of what is known
    if frame is not None and len(frame):
        current = frame["status"].iloc[-1]
        if current != Status.RUNNING:
            return current
        frame["status"] = status
        if error is not None:
            frame["error"] = error
        store.write_table(pa.Table.from_pandas(frame, preserve_index=False), "trials", trial_id)
        return status
    row = {"study": study, "trial_id": trial_id, "epoch": -1, "status": status}
    row.update({f"param.{k}": scalar(v) for k, v in (params or {}).items()})
    row.update({k: None for k in METRICS})
    row.update(provenance or {})
    if error is not None:
        row["error"] = error
    store.write_table(pa.Table.from_pylist([row]), "trials", trial_id)
    return status
