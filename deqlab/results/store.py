"""The one owner of a study directory: its paths, local-path-or-URI handling, filesystem, atomic writes,
listing and reading its files.

Layout of a study directory (docs/design.md "Results"):

    <root>/<study>/study.yaml              the validated study spec as run (`deqlab run`)
    <root>/<study>/train.yaml              the TrainConfig of a `deqlab train` run
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

import os
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .safe_yaml import load_capped, too_big
from .schema import KEYS, METRICS, check_name, is_safe_name, printable

STUDY_FILE = "study.yaml"
TRAIN_FILE = "train.yaml"
TRIAL_KINDS = ("trials", "traces", "states")
ORPHAN_DIR = "orphaned"
COMPACT_DIR = "compact"
FAULT_PAUSE_ENV = "DEQLAB_FAULT_PAUSE_BEFORE_RENAME_S"  # test hook, see write_table_atomic
# A results file beyond these is no file deqlab wrote (a 10,000-trial snapshot is ~100 MB, its footer ~1 MB):
# refused from its size and footer, before pyarrow allocates what they claim.
MAX_RESULTS_FILE_BYTES, MAX_FOOTER_BYTES = 1 << 30, 64 << 20
MAX_YAML_READ = (1 << 20) + 1  # a spec that grew past its listed size is still read only this far
# --------------------------------------------------------------------------- local paths and URIs


def is_uri(path) -> bool:
    """Whether a results location is a URI (s3://bucket/x) rather than a local path."""
    return "://" in str(path)


def absolute(path) -> str:
    """A URI as it is, a local path made absolute: Tune runs each trial in its own working directory, where
    a relative root would land."""
    path = os.fspath(path)
    return path if is_uri(path) else os.path.abspath(path)


def filesystem(path) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, the path within it) of a local path or a URI."""
    path = os.fspath(path)
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def study_path(root, name: str) -> str:
    """Where study `name` lives under a results root: absolute when local, the URI itself when remote."""
    root = absolute(root)
    return f"{root.rstrip('/')}/{name}"


def join(path, child: str) -> str:
    """`path/child` for a local path or a URI (whose `//` os.path must not touch)."""
    path = os.fspath(path)
    return f"{path.rstrip('/')}/{child}" if is_uri(path) else os.path.join(path, child)


# --------------------------------------------------------------------------- atomic writes


def _renames_atomically(fs: pafs.FileSystem) -> bool:
    """Local disks: write a temp file and rename it. Object stores (S3, GCS) have no rename, but a single
    PUT (or a completed multipart upload) appears whole or not at all."""
    return isinstance(fs, pafs.LocalFileSystem)


def _write_atomic(fs: pafs.FileSystem, path: str, write) -> None:
    """Run `write(stream)` so that readers of `path` see the old file or the new one, never a part.

    Test hook: when the environment variable `DEQLAB_FAULT_PAUSE_BEFORE_RENAME_S`
    is set (seconds, a float), every write sleeps that long after the temporary
    file is complete and before the rename, so a test can kill a process in the
    middle of a write. Unset (the default) it costs one dictionary lookup.
    """
    parent, name = path.rsplit("/", 1) if "/" in path else ("", path)
    fs.create_dir(parent, recursive=True)
    if not _renames_atomically(fs):  # object storage: one PUT is atomic; its "rename" is a copy + delete
        with fs.open_output_stream(path) as out:
            write(out)
        return
    tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as out:
            write(out)
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


def write_table_atomic(table: pa.Table, path: str, fs: Optional[pafs.FileSystem] = None) -> None:
    """Write a Parquet file atomically (`fs` given: `path` is within it; else a local path or URI)."""
    if fs is None:
        fs, path = filesystem(path)
    _write_atomic(fs, path, lambda out: pq.write_table(table, out))


def write_text_atomic(text: str, path: str) -> None:
    fs, path = filesystem(path)
    _write_atomic(fs, path, lambda out: out.write(text.encode()))


# --------------------------------------------------------------------------- reading files


def _parquet_files(fs: pafs.FileSystem, folder: str, skipped: list) -> list[pafs.FileInfo]:
    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (OSError, pa.ArrowException) as exc:
        skipped.append(f"{folder}: {exc}")
        return []
    # temp files of a write in progress are hidden (".name.uuid.tmp")
    return sorted((i for i in infos if i.type == pafs.FileType.File and not i.base_name.startswith(".")
                   and i.base_name.endswith(".parquet")), key=lambda i: i.path)


def read_table(fs: pafs.FileSystem, path: str):
    """One file's table, or the exception that made it unreadable.

    `ParquetFile.read` rather than `pq.read_table`: the latter goes through the
    dataset machinery, which costs ~2.5x more per small file (measured on
    20-row trial files).
    """
    try:
        with fs.open_input_file(path) as f:
            table = open_parquet(f).read(use_threads=False)
        table.validate(full=True)  # a flipped bit can leave invalid UTF-8 that only breaks later, in pandas
        _check_columns(table, path)
        return table
    except Exception as exc:  # a corrupt file must not hide the rest of the study
        return exc


def open_parquet(f) -> pq.ParquetFile:
    """A Parquet file opened after its size and footer were found sane: a footer that claims 2 GB of
    metadata, or row groups that claim more than MAX_RESULTS_FILE_BYTES, are refused before any allocation."""
    size = f.size()
    if size > MAX_RESULTS_FILE_BYTES:
        raise ValueError(f"{size} bytes; a results file is at most {MAX_RESULTS_FILE_BYTES}")
    if size < 12:
        raise ValueError(f"{size} bytes: too short for a Parquet file")
    f.seek(size - 8)
    tail = f.read(8)
    footer = int.from_bytes(tail[:4], "little")
    if tail[4:] != b"PAR1":
        raise ValueError("not a Parquet file (no PAR1 at its end)")
    if footer > min(size - 12, MAX_FOOTER_BYTES):
        raise ValueError(f"its footer claims {footer} bytes of metadata in a file of {size}")
    f.seek(0)
    parquet = pq.ParquetFile(f)
    meta = parquet.metadata
    claimed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if claimed > MAX_RESULTS_FILE_BYTES:
        raise ValueError(f"its row groups claim {claimed} bytes; a results file holds at most {MAX_RESULTS_FILE_BYTES}")
    return parquet


def check_names(table: pa.Table) -> None:
    """Trial and study names, as every reader gets them: each must be a safe name (they become paths and
    page keys: `../../etc/passwd` is refused here, where it is read)."""
    for column in ("study", "trial_id"):
        if column in table.column_names:
            bad = [v for v in pc.unique(table.column(column)).to_pylist() if not is_safe_name(v)]
            if bad:
                raise ValueError(f"column {column} holds invalid names: {', '.join(map(printable, map(repr, bad[:3])))}")


_KEYS = {"trials": KEYS, "traces": KEYS[:3]}


def _check_columns(table: pa.Table, path: str) -> None:
    """A file readers cannot use is refused like a torn one: key columns missing, a hyperparameter that
    is not a scalar (a list breaks grouping), a metric that is not a number (text breaks every mean)."""
    kind = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
    if kind not in _KEYS:
        return
    missing = [c for c in _KEYS[kind] if c not in table.column_names]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    check_names(table)
    for f in table.schema:
        if f.name.startswith("param.") and pa.types.is_nested(f.type):
            raise ValueError(f"column {f.name} holds {f.type} values, not scalars")
        numeric = pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_null(f.type)
        if kind == "trials" and f.name in METRICS and not numeric:
            raise ValueError(f"column {f.name} holds {f.type} values, not numbers")


def read_files(fs: pafs.FileSystem, infos: list, skipped: list, cache=None) -> list[tuple[pafs.FileInfo, pa.Table]]:
    """(info, table) of every readable file among `infos`, read by one thread per core.

    A study holds one small file per trial: with 10,000 trials the per-file
    open and metadata decoding dominate, and pyarrow does them without the GIL.
    `cache` (a reader.TableCache) answers for files unchanged since it read them.
    """
    outcomes: list = [cache.get(i) if cache is not None else None for i in infos]
    todo = [k for k, out in enumerate(outcomes) if out is None]
    workers = max(1, min(os.cpu_count() or 1, 8, len(todo) // 64))
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            fresh = list(pool.map(lambda k: read_table(fs, infos[k].path), todo))
    else:
        fresh = [read_table(fs, infos[k].path) for k in todo]
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


# --------------------------------------------------------------------------- the study directory


class StudyStore:
    """One study directory, local or in object storage: `StudyStore(path)` or `StudyStore.of(root, name)`.

    `path` is what callers pass on (absolute when local, the URI when remote);
    `fs` and `base` address its files through pyarrow.
    """

    def __init__(self, path):
        self.path = absolute(path)
        self.fs, self.base = filesystem(self.path)

    @classmethod
    def of(cls, root, name: str) -> "StudyStore":
        return cls(study_path(root, check_name("study", name)))

    def file(self, kind: str, trial_id: str) -> str:
        """A trial's file of one kind (`trials`, `traces`, `states`), within `fs`."""
        return f"{self.base}/{kind}/{check_name('trial', trial_id)}.parquet"

    def at(self, relative: str) -> str:
        """Any file of the study (`study.yaml`, `compact/trials.parquet`), within `fs`."""
        return f"{self.base}/{relative}"

    def exists(self) -> bool:
        return self.fs.get_file_info(self.base).type == pafs.FileType.Directory

    def is_study(self) -> bool:
        """A folder is a study when it has trials or a spec (a results root has neither: its studies do)."""
        return (self.fs.get_file_info(self.at("trials")).type == pafs.FileType.Directory
                or any(self.fs.get_file_info(self.at(f)).type == pafs.FileType.File for f in (STUDY_FILE, TRAIN_FILE)))

    def files(self, kind: str, skipped: Optional[list] = None) -> list[pafs.FileInfo]:
        """The visible Parquet files of one kind (a write's temp file is hidden); a listing error, and a
        link leading out of the study folder, go to `skipped` (when given)."""
        skipped = skipped if skipped is not None else []
        infos = _parquet_files(self.fs, self.at(kind), skipped)
        if not infos or not isinstance(self.fs, pafs.LocalFileSystem):
            return infos  # object stores have no links
        plain = self.outside(self.at(kind)) is None  # the folder itself: then only a link among its files can lead out
        kept = []
        for info in infos:
            outside = None if plain and not os.path.islink(info.path) else self.outside(info.path)
            if outside:  # a link to another study's file would pool its rows in silently
                skipped.append(f"{info.path}: {outside}")
                warnings.warn(f"skipping {printable(info.path)}: {printable(outside)}", stacklevel=5)
            else:
                kept.append(info)
        return kept

    def outside(self, path: str) -> Optional[str]:
        """Why a local file of the study is not read (it resolves outside the study folder), None when it is
        inside (or in an object store, which has no links)."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            return None
        real, root = os.path.realpath(path), os.path.realpath(self.base)
        if real == root or real.startswith(root + os.sep):
            return None
        return f"a link to {real}, outside the study folder"

    def trial_ids(self, kind: str = "trials") -> set[str]:
        """The trials that have a (visible) file of one kind in the study."""
        names = (i.base_name[: -len(".parquet")] for i in self.files(kind))
        return {n for n in names if is_safe_name(n)}  # a stray file of another name is no trial of ours

    def listing(self) -> tuple[list[pafs.FileInfo], list[str]]:
        """(infos of the spec files and of every results file, listing errors): what a change detector hashes."""
        infos, errors = [self.fs.get_file_info(self.at(f)) for f in (STUDY_FILE, TRAIN_FILE)], []
        for kind in TRIAL_KINDS:
            try:
                infos += self.fs.get_file_info(pafs.FileSelector(self.at(kind), allow_not_found=True))
            except OSError as exc:
                errors.append(str(exc))
        return infos, errors

    def read_trial_file(self, kind: str, trial_id: str):
        """One trial's file of one kind as a DataFrame, None when it has none; unreadable: a ValueError."""
        if not self.has(kind, trial_id):
            return None
        path = self.file(kind, trial_id)
        if self.outside(path):
            raise ValueError(f"not reading {path}: {self.outside(path)}")
        out = read_table(self.fs, path)
        if isinstance(out, Exception):
            raise ValueError(f"unreadable results file {path}: {type(out).__name__}: {out}")
        return out.to_pandas()

    def trial_progress(self, trial_id: str) -> tuple[Optional[str], int]:
        """(status on disk, last epoch written), or (None, -1) when the trial has no readable file yet."""
        try:
            with self.fs.open_input_file(self.file("trials", trial_id)) as f:
                table = open_parquet(f).read(columns=["status", "epoch"])
        except (OSError, ValueError, pa.ArrowException):
            return None, -1
        if table.num_rows == 0:
            return None, -1
        return table.column("status")[-1].as_py(), int(table.column("epoch")[-1].as_py())

    def write_table(self, table: pa.Table, kind: str, trial_id: str) -> None:
        write_table_atomic(table, self.file(kind, trial_id), self.fs)

    def write_text(self, relative: str, text: str) -> None:
        _write_atomic(self.fs, self.at(relative), lambda out: out.write(text.encode()))

    def read_yaml(self, relative: str = STUDY_FILE) -> dict:
        """A YAML file of the study as a mapping ({} when there is none); unreadable: a ValueError naming it.
        Read with a study file's caps (`safe_yaml`: size, nesting), since a results folder comes from anywhere."""
        path = self.at(relative)
        try:
            info = self.fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                return {}
            outside = self.outside(path)
            if outside or too_big(info.size):
                raise ValueError(outside or too_big(info.size))
            with self.fs.open_input_stream(path) as f:
                spec = load_capped(f.read(MAX_YAML_READ).decode())
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise ValueError(f"unreadable study spec {path}: {exc}") from None
        if spec is None:
            return {}
        if not isinstance(spec, dict):
            raise ValueError(f"unreadable study spec {path}: expected a mapping, got {type(spec).__name__}")
        return spec

    def set_aside(self, trial_ids: Iterable[str]) -> list[str]:
        """Move trials' files out of the study's view, into `<study>/orphaned/<kind>/`, and return their ids.

        For trials a killed driver had started after Tune last saved its state:
        the resumed study never knew them and runs their share of the budget as
        new trials, so left in place they would be counted twice (once
        unfinished). Moved, not deleted: what they measured stays on disk.
        """
        moved = []
        for trial_id in sorted(trial_ids):
            for kind in TRIAL_KINDS:
                if not self.has(kind, trial_id):
                    continue
                src = self.file(kind, trial_id)
                self.fs.create_dir(self.at(f"{ORPHAN_DIR}/{kind}"), recursive=True)
                self.fs.move(src, self.at(f"{ORPHAN_DIR}/{kind}/{trial_id}.parquet"))
            moved.append(trial_id)
        return moved

    def has(self, kind: str, trial_id: str) -> bool:
        return self.fs.get_file_info(self.file(kind, trial_id)).type == pafs.FileType.File

    def studies_below(self) -> list[str]:
        """Names of the study directories directly under this folder (a results root)."""
        if not self.exists():
            return []
        children = sorted(i.base_name for i in self.fs.get_file_info(pafs.FileSelector(self.base))
                          if i.type == pafs.FileType.Directory and not i.base_name.startswith("."))
        return [c for c in children if StudyStore(join(self.path, c)).is_study()]
