"""Results on disk: one Parquet file per trial, written atomically, read back as DataFrames.

Layout of a study directory (docs/design.md "Results"):

    <root>/<study>/study.yaml              the validated spec as run
    <root>/<study>/trials/<trial>.parquet  one row per epoch
    <root>/<study>/traces/<trial>.parquet  residual after each solver step (fixed eval batch)
    <root>/<study>/states/<trial>.parquet  hidden states after k solver steps (depth view), optional
    <root>/<study>/compact/{trials,traces}.parquet  optional snapshots of all trials/traces (`compact`)
    <root>/<study>/orphaned/<kind>/<trial>.parquet  files of trials a killed driver started that its
                                           resumed study never knew (`set_aside`); not loaded

Every write goes to a hidden temporary file in the same directory and is then
renamed over the target, so a reader (the dashboard, `deqlab ls`) never sees a
torn file and a killed run leaves at worst a stray temp file that readers skip.
`root` may be a local path or any URI pyarrow's filesystems understand
(s3://, gs://), so a cluster's trials land in shared storage.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
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
    "nfe_jac", "nfe_train_total", "nfe_test_total", "nfe_fwd_paper",  # docs/reproductions.md: NFE columns
)
PROVENANCE = (
    "seed", "config_hash", "deqlab_version", "torch_version", "ray_version", "device", "num_workers", "started_at",
    # where it ran (deqlab.provenance.COLUMNS)
    "hostname", "hardware", "cpu_model", "cpu_count", "gpu_name", "gpu_count", "gpu_memory_gb", "cuda_version",
    "gpu_driver", "python_version", "optuna_version", "torchdiffeq_version", "code_version", "node_id",
)
TRACE_COLUMNS = ("epoch", "phase", "step", "residual_max", "residual_mean")
FAULT_PAUSE_ENV = "DEQLAB_FAULT_PAUSE_BEFORE_RENAME_S"  # test hook, see write_table_atomic
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=+-]{0,200}$")


def _is_safe_name(name) -> bool:
    return isinstance(name, str) and bool(_SAFE_NAME.match(name)) and ".." not in name


def check_name(kind: str, name: str) -> str:
    """Study and trial names become path components: refuse anything that could escape the root."""
    if not _is_safe_name(name):
        raise ValueError(
            f"invalid {kind} name {name!r}: use letters, digits and _ . = + - (no path separators, no '..')"
        )
    return name


def _filesystem(root: str) -> tuple[pafs.FileSystem, str]:
    if "://" in str(root):
        return pafs.FileSystem.from_uri(str(root))
    return pafs.LocalFileSystem(), os.path.abspath(os.fspath(root))


def write_table_atomic(table: pa.Table, path: str, fs: Optional[pafs.FileSystem] = None) -> None:
    """Write a Parquet file so that readers see the old file or the new one, never a part.

    Test hook: when the environment variable `DEQLAB_FAULT_PAUSE_BEFORE_RENAME_S`
    is set (seconds, a float), every write sleeps that long after the temporary
    file is complete and before the rename, so a test can kill a process in the
    middle of a write. Unset (the default) it costs one dictionary lookup.
    """
    if fs is None:
        fs, path = _filesystem(path)
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    fs.create_dir(parent, recursive=True)
    if not _renames_atomically(fs):  # object storage: one PUT is atomic; its "rename" is a copy + delete
        with fs.open_output_stream(path) as out:
            pq.write_table(table, out)
        return
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out)
        pause = os.environ.get(FAULT_PAUSE_ENV)
        if pause:
            time.sleep(float(pause))
        fs.move(tmp, path)
    except BaseException:
        try:
            fs.delete_file(tmp)
        except Exception:
            pass
        raise


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    """Local disks: write a temp file and rename it. Object stores (S3, GCS) have no rename, but a single
    PUT (or a completed multipart upload) appears whole or not at all."""
    return isinstance(fs, pafs.LocalFileSystem)


def write_text_atomic(text: str, path: str) -> None:
    fs, path = _filesystem(path)
    parent, name = path.rsplit("/", 1)
    fs.create_dir(parent, recursive=True)
    if not _renames_atomically(fs):
        with fs.open_output_stream(path) as out:
            out.write(text.encode())
        return
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


FINAL_STATUSES = ("completed", "pruned", "diverged", "failed")


def finalize_trial(root: str, study: str, trial_id: str, status: str, *, error: Optional[str] = None,
                   params: Optional[dict] = None, provenance: Optional[dict] = None) -> str:
    """Record how a trial ended when the trial itself could not (pruned, killed, crashed).

    The driver calls this after Ray Tune stops or loses a trial. A file that
    already carries a final status written by the trial (completed, diverged)
    keeps it: only rows still marked running are relabelled. A trial that
    failed before its first epoch gets one row with epoch -1 and no metrics,
    so it is still counted. Returns the status on disk afterwards.
    """
    if status not in FINAL_STATUSES:
        raise ValueError(f"unknown final status {status!r}; valid: {', '.join(FINAL_STATUSES)}")
    check_name("study", study)
    check_name("trial", trial_id)
    fs, base = _filesystem(root)
    path = f"{base}/{study}/trials/{trial_id}.parquet"
    try:
        with fs.open_input_file(path) as f:
            frame = pq.read_table(f).to_pandas()
    except FileNotFoundError:
        frame = None
    except (OSError, pa.ArrowException):
        frame = None  # torn or unreadable: replaced below by the record of what is known
    if frame is not None and len(frame):
        current = frame["status"].iloc[-1]
        if current != "running":
            return current
        frame["status"] = status
        if error is not None:
            frame["error"] = error
        write_table_atomic(pa.Table.from_pandas(frame, preserve_index=False), path, fs)
        return status
    row = {"study": study, "trial_id": trial_id, "epoch": -1, "status": status}
    row.update({f"param.{k}": _scalar(v) for k, v in (params or {}).items()})
    row.update({k: None for k in METRICS})
    row.update(provenance or {})
    if error is not None:
        row["error"] = error
    write_table_atomic(pa.Table.from_pylist([row]), path, fs)
    return status


TRIAL_KINDS = ("trials", "traces", "states")
ORPHAN_DIR = "orphaned"


def trial_ids_on_disk(root: str, study: str) -> set[str]:
    """The trials that have a (visible) trials file in the study."""
    fs, base = _filesystem(root)
    names = (i.base_name[: -len(".parquet")] for i in _parquet_files(fs, f"{base}/{study}/trials", []))
    return {n for n in names if _is_safe_name(n)}  # a stray file of another name is no trial of ours


def set_aside(root: str, study: str, trial_ids: Iterable[str]) -> list[str]:
    """Move trials' files out of the study's view, into `<study>/orphaned/<kind>/`, and return their ids.

    For trials a killed driver had started after Tune last saved its state: the
    resumed study never knew them and runs their share of the budget as new
    trials, so left in place they would be counted twice (once unfinished).
    Moved, not deleted: what they measured stays on disk for whoever wants it.
    """
    fs, base = _filesystem(root)
    moved = []
    for trial_id in sorted(trial_ids):
        check_name("trial", trial_id)
        for kind in TRIAL_KINDS:
            src = f"{base}/{study}/{kind}/{trial_id}.parquet"
            if fs.get_file_info(src).type != pafs.FileType.File:
                continue
            fs.create_dir(f"{base}/{study}/{ORPHAN_DIR}/{kind}", recursive=True)
            fs.move(src, f"{base}/{study}/{ORPHAN_DIR}/{kind}/{trial_id}.parquet")
        moved.append(trial_id)
    return moved


def trial_progress(root: str, study: str, trial_id: str) -> tuple[Optional[str], int]:
    """(status on disk, last epoch written), or (None, -1) when the trial has no readable file yet."""
    fs, base = _filesystem(root)
    try:
        with fs.open_input_file(f"{base}/{study}/trials/{trial_id}.parquet") as f:
            table = pq.read_table(f, columns=["status", "epoch"])
    except (OSError, pa.ArrowException):
        return None, -1
    if table.num_rows == 0:
        return None, -1
    return table.column("status")[-1].as_py(), int(table.column("epoch")[-1].as_py())


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


def _parquet_files(fs: pafs.FileSystem, folder: str, skipped: list) -> list[pafs.FileInfo]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        skipped.append(f"{folder}: {exc}")
        return []
    # temp files of a write in progress are hidden (".name.uuid.tmp")
    return sorted((i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".")
                   and i.base_name.endswith(".parquet")), key=lambda i: i.path)


def _read_table(fs: pafs.FileSystem, path: str):
    """One file's table, or the exception that made it unreadable.

    `ParquetFile.read` rather than `pq.read_table`: the latter goes through the
    dataset machinery, which costs ~2.5x more per small file (measured on
    20-row trial files).
    """
    try:
        with fs.open_input_file(path) as f:
            table = pq.ParquetFile(f).read(use_threads=False)
        table.validate(full=True)  # a flipped bit can leave invalid UTF-8 that only breaks later, in pandas
        _check_columns(table, path)
        return table
    except Exception as exc:  # a corrupt file must not hide the rest of the study
        return exc


_KEYS = {"trials": ("study", "trial_id", "epoch", "status"), "traces": ("study", "trial_id", "epoch")}


def _check_columns(table: pa.Table, path: str) -> None:
    """A file readers cannot use is refused like a torn one: key columns missing, a hyperparameter that
    is not a scalar (a list breaks grouping), a metric that is not a number (text breaks every mean)."""
    kind = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
    if kind not in _KEYS:
        return
    missing = [c for c in _KEYS[kind] if c not in table.column_names]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    for f in table.schema:
        if f.name.startswith("param.") and pa.types.is_nested(f.type):
            raise ValueError(f"column {f.name} holds {f.type} values, not scalars")
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_null(f.type)
        if kind == "trials" and f.name in METRICS and not numeric:
            raise ValueError(f"column {f.name} holds {f.type} values, not numbers")


def _read_files(fs: pafs.FileSystem, infos: list, skipped: list,
                cache: Optional[TableCache] = None) -> list[tuple[pafs.FileInfo, pa.Table]]:
    """(info, table) of every readable file among `infos`, read by one thread per core.

    A study holds one small file per trial: with 10,000 trials the per-file
    open and metadata decoding dominate, and pyarrow does them without the GIL.
    """
    outcomes: list = [cache.get(i) if cache is not None else None for i in infos]
    todo = [k for k, out in enumerate(outcomes) if out is None]
    workers = max(1, min(os.cpu_count() or 1, 8, len(todo) // 64))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            fresh = list(pool.map(lambda k: _read_table(fs, infos[k].path), todo))
    else:
        fresh = [_read_table(fs, infos[k].path) for k in todo]
    for k, out in zip(todo, fresh):
        outcomes[k] = out
        if cache is not None and not isinstance(out, Exception):
            cache.put(infos[k], out)
    tables = []
    for info, out in zip(infos, outcomes):
        if isinstance(out, Exception):
            skipped.append(f"{info.path}: {type(out).__name__}: {out}")
            warnings.warn(f"skipping unreadable results file {info.path}: {out}", stacklevel=4)
        else:
            tables.append((info, out))
    return tables


# --------------------------------------------------------------------------- compaction snapshots
#
# Opening a small Parquet file costs pyarrow ~1 ms of CPU, so a 10,000-trial
# study takes seconds to load file by file. `compact` merges a study's
# per-trial files into one snapshot per kind; `load` reads the snapshot and
# only the per-trial files it does not cover. The per-trial files stay the
# source of truth: the snapshot's manifest records, for every file merged, its
# size, mtime and where its rows are, and rows of a file that has since
# changed or gone are left out.

COMPACT_DIR = "compact"
SNAPSHOT_KEY = b"deqlab.snapshot"  # schema metadata: JSON manifest, see `_Snapshot`
SNAPSHOT_VERSION = 1


def snapshot_path(study_dir, kind: str = "trials") -> str:
    """Where `compact` writes the snapshot of one kind of per-trial file (`trials` or `traces`)."""
    _, base = _filesystem(os.fspath(study_dir))
    return f"{base}/{COMPACT_DIR}/{kind}.parquet"


@dataclass
class _Snapshot:
    """A snapshot's rows and its manifest.

    `files`: source file name -> (size, mtime_ns, first row, row count); each
    file's rows are contiguous, so leaving files out is zero-copy slicing.
    `partial`: column -> names of the files that have it, for the columns only
    some files have; a column none of the used files has is dropped, as a load
    of those files alone would not have it.
    """

    table: pa.Table
    files: dict
    partial: dict

    @classmethod
    def parse(cls, table: pa.Table) -> "_Snapshot":
        """Check the manifest against the rows; a ValueError says what is wrong."""
        meta = (table.schema.metadata or {}).get(SNAPSHOT_KEY)
        if meta is None:
            raise ValueError("not a deqlab snapshot: no manifest in its metadata")
        manifest = json.loads(meta)
        if manifest.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {manifest.get('version')!r}, this deqlab reads {SNAPSHOT_VERSION}")
        files = {name: tuple(int(v) for v in entry) for name, entry in manifest["files"].items()}
        spans = sorted((offset, rows) for _, _, offset, rows in files.values())
        end = 0
        for offset, rows in spans:
            if offset != end or rows <= 0:
                raise ValueError("manifest does not match the rows (overlapping or missing row ranges)")
            end += rows
        if end != table.num_rows:
            raise ValueError(f"manifest covers {end} rows, the snapshot has {table.num_rows}")
        table = table.replace_schema_metadata(None)
        return cls(table, files, {col: set(names) for col, names in manifest.get("partial", {}).items()})

    def covers(self, info: pafs.FileInfo) -> bool:
        """Whether the file is merged here as it is now (same size and mtime).

        A file without an mtime (some object stores) could be rewritten at the
        same size unseen, so it is never taken from a snapshot.
        """
        entry = self.files.get(info.base_name)
        return entry is not None and info.mtime_ns is not None and entry[:2] == (info.size, info.mtime_ns)

    def rows(self, names: set) -> Optional[pa.Table]:
        """The rows of the named files (each must be in `files`), or None when there are none."""
        if not names:
            return None
        if len(names) == len(self.files):
            return self.table
        spans = sorted(self.files[n][2:] for n in names)
        runs: list[list[int]] = []
        for offset, rows in spans:  # adjacent files become one slice
            if runs and runs[-1][0] + runs[-1][1] == offset:
                runs[-1][1] += rows
            else:
                runs.append([offset, rows])
        table = pa.concat_tables([self.table.slice(offset, rows) for offset, rows in runs])
        return table.drop_columns([c for c, having in self.partial.items()
                                   if c in table.column_names and having.isdisjoint(names)])

    def sources(self, names: set) -> list:
        """(name, (size, mtime_ns), rows, columns the file has) of each named file, for compacting again."""
        out = []
        for name in sorted(names, key=lambda n: self.files[n][2]):
            size, mtime, offset, rows = self.files[name]
            columns = frozenset(c for c in self.table.column_names
                                if c not in self.partial or name in self.partial[c])
            out.append((name, (size, mtime), self.table.slice(offset, rows), columns))
        return out


def _read_snapshot(fs: pafs.FileSystem, path: str, skipped: list,
                   cache: Optional[TableCache] = None) -> Optional[_Snapshot]:
    """The snapshot at `path`, or None when there is none or it is unreadable (then with a warning naming it)."""
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            if cache is not None:
                cache.discard(path)
            return None
        hit = cache.get(info) if cache is not None else None
        if isinstance(hit, _Snapshot):
            return hit
        with fs.open_input_file(path) as f:
            table = pq.ParquetFile(f).read()
        table.validate(full=True)
        snap = _Snapshot.parse(table)
    except Exception as exc:  # corrupt, truncated, not ours: the per-trial files still hold everything
        skipped.append(f"{path}: {type(exc).__name__}: {exc}")
        warnings.warn(f"skipping unreadable results snapshot {path} ({exc}); reading the per-trial files instead",
                      stacklevel=5)  # the caller of load
        return None
    if cache is not None:
        cache.put(info, snap)
    return snap


def _plan(fs: pafs.FileSystem, base: str, kind: str, skipped: list, cache: Optional[TableCache] = None):
    """(folder's files, snapshot or None, names the snapshot covers, files to open) for one kind of a study.

    One listing of the folder decides which files the snapshot covers (same
    name, size and mtime); only the others need opening.
    """
    infos = _parquet_files(fs, f"{base}/{kind}", skipped)
    snap = _read_snapshot(fs, f"{base}/{COMPACT_DIR}/{kind}.parquet", skipped, cache)
    if snap is None:
        return infos, None, set(), infos
    covered = {i.base_name for i in infos if snap.covers(i)}
    if isinstance(fs, pafs.LocalFileSystem):
        covered -= _touched_since(f"{base}/{COMPACT_DIR}/{kind}.parquet", infos, covered)
    return infos, snap, covered, [i for i in infos if i.base_name not in covered]


def _touched_since(snapshot: str, infos: list, names: set) -> set:
    """Local files among `names` changed in place after the snapshot was written, size and mtime restored
    (a damaged disk block, `touch -d`): their inode change time, which no program can set back, is later
    than the snapshot's. They are read again (and skipped with a warning if they no longer read)."""
    try:
        written = os.stat(snapshot).st_mtime_ns
    except OSError:
        return set(names)
    out = set()
    for info in infos:
        if info.base_name in names:
            try:
                if os.stat(info.path).st_ctime_ns > written:
                    out.add(info.base_name)
            except OSError:
                out.add(info.base_name)
    return out


def _read_dir(fs: pafs.FileSystem, base: str, kind: str, skipped: list,
              cache: Optional[TableCache] = None) -> list[pa.Table]:
    """Every readable table of one kind of a study: the snapshot's still-valid rows, then the files it lacks."""
    infos, snap, covered, todo = _plan(fs, base, kind, skipped, cache)
    part = snap.rows(covered) if snap is not None else None
    tables = ([part] if part is not None else []) + [t for _, t in _read_files(fs, todo, skipped, cache)]
    if cache is not None:
        cache.retain(f"{base}/{kind}", {i.path for i in infos})
    return tables


_MERGE_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def _merge_for_snapshot(sources: list) -> tuple[pa.Table, list]:
    """(one table, the sources in it, in row order) from `(name, stamp, table, columns)` sources.

    A hyperparameter that is a number in some trials and text in others has
    no single Parquet type: the files of the less common type stay out of the
    snapshot, so `load` reads them (correct, only not sped up).
    """
    try:
        return pa.concat_tables([s[2] for s in sources], promote_options="permissive"), sources
    except _MERGE_ERRORS:
        pass
    groups: dict = {}
    for s in sources:
        groups.setdefault(s[2].schema, []).append(s)
    schema, kept = None, []
    for group in sorted(groups.values(), key=lambda g: -sum(s[2].num_rows for s in g)):
        try:
            schema = group[0][2].schema if schema is None else pa.unify_schemas(
                [schema, group[0][2].schema], promote_options="permissive")
        except _MERGE_ERRORS:
            continue
        kept += group
    return pa.concat_tables([s[2] for s in kept], promote_options="permissive"), kept


def compact(study_path) -> int:
    """Merge a study's per-trial files into one snapshot per kind, so `load` opens two files instead of 10,000.

    Writes `<study>/compact/trials.parquet` and `<study>/compact/traces.parquet`
    atomically (readers see the old snapshot or the new one). The per-trial
    files are kept and stay the truth: `load` re-reads any file whose size or
    mtime differs from the one recorded here, and leaves out rows of files that
    are gone, so compacting a running study is safe, only less useful. An
    existing snapshot is reused: only files changed since it are opened.
    Unreadable files are left out with a warning (load warns about them
    again). Returns the number of trial files in the trials snapshot.
    """
    fs, base = _filesystem(os.fspath(study_path))
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise FileNotFoundError(f"cannot compact {base}: not a study directory")
    counts = {"trials": 0}
    for kind in ("trials", "traces"):
        target = f"{base}/{COMPACT_DIR}/{kind}.parquet"
        _, snap, covered, todo = _plan(fs, base, kind, [])
        # each file's size and mtime come from the listing, taken before it is read: a file replaced in
        # between is merged with its old stamp, so `load` sees it as changed and re-reads it
        fresh = [(info.base_name, (info.size, info.mtime_ns), t, frozenset(t.column_names))
                 for info, t in _read_files(fs, todo, [])
                 if t.num_rows and info.mtime_ns is not None]  # neither could ever be taken from a snapshot
        if snap is not None and not fresh and len(covered) == len(snap.files):
            counts[kind] = len(snap.files)
            continue  # the snapshot is current: rewriting it would change nothing
        sources = (snap.sources(covered) if snap is not None else []) + fresh
        if sources:
            table, sources = _merge_for_snapshot(sources)
        elif fs.get_file_info(target).type == pafs.FileType.NotFound:
            continue  # nothing to merge and no old snapshot to supersede
        else:
            table = pa.table({})
        files, offset = {}, 0
        for name, (size, mtime), rows, _ in sources:
            files[name] = [size, mtime, offset, rows.num_rows]
            offset += rows.num_rows
        names = set(files)
        partial, unused = {}, []
        for col in table.column_names:
            having = {name for name, _, _, columns in sources if col in columns}
            if not having:
                unused.append(col)  # only files that changed or went away had it
            elif having != names:
                partial[col] = sorted(having)
        table = table.drop_columns(unused)
        manifest = {"version": SNAPSHOT_VERSION, "files": files, "partial": partial}
        # one chunk per column: pyarrow writes 10,000 one-file chunks ~4x slower than one
        table = table.combine_chunks().replace_schema_metadata({SNAPSHOT_KEY: json.dumps(manifest).encode()})
        write_table_atomic(table, target, fs)
        counts[kind] = len(files)
    return counts["trials"]


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
        fs, base = _filesystem(os.fspath(p))
        trials += _read_dir(fs, base, "trials", skipped, cache)
        if traces:
            trace_tables += _read_dir(fs, base, "traces", skipped, cache)
    return Results(_frame(trials, ["study", "trial_id", "epoch", "status"]),
                   _frame(trace_tables, ["study", "trial_id", *TRACE_COLUMNS]), skipped)


def _read_trial_file(study_dir, kind: str, trial_id: str) -> Optional[pd.DataFrame]:
    check_name("trial", trial_id)
    fs, base = _filesystem(os.fspath(study_dir))
    path = f"{base}/{kind}/{trial_id}.parquet"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    out = _read_table(fs, path)
    if isinstance(out, Exception):
        raise ValueError(f"unreadable results file {path}: {type(out).__name__}: {out}")
    return out.to_pandas()


def load_trial_traces(study_dir, trial_id: str) -> pd.DataFrame:
    """One trial's residual traces (empty when it has none); an unreadable file is a ValueError naming it."""
    frame = _read_trial_file(study_dir, "traces", trial_id)
    return frame if frame is not None else pd.DataFrame(columns=["study", "trial_id", *TRACE_COLUMNS])


def load_states(study_dir, trial_id: str) -> Optional[pd.DataFrame]:
    """One trial's depth states (epoch, step, sample, label, state), or None when it recorded none."""
    return _read_trial_file(study_dir, "states", trial_id)


def load_spec(study_dir) -> dict:
    """The study's study.yaml as a mapping ({} when there is none); unreadable YAML is a ValueError naming it.

    A Ray study writes its spec (name, objectives, ...), `deqlab train` a
    TrainConfig dump: callers read the keys they need defensively.
    """
    import yaml

    fs, base = _filesystem(os.fspath(study_dir))
    path = f"{base}/study.yaml"
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return {}
        with fs.open_input_stream(path) as f:
            spec = yaml.safe_load(f.read().decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"unreadable study spec {path}: {exc}") from None
    if spec is None:
        return {}
    if not isinstance(spec, dict):
        raise ValueError(f"unreadable study spec {path}: expected a mapping, got {type(spec).__name__}")
    return spec
