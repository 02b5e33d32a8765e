"""Compaction snapshots: one Parquet file per kind holding every trial's rows, and reading a study folder
through it.

Opening a small Parquet file costs pyarrow ~1 ms of CPU, so a 10,000-trial
study takes seconds to load file by file. `compact` merges a study's
per-trial files into one snapshot per kind; `load` reads the snapshot and
only the per-trial files it does not cover. The per-trial files stay the
source of truth: the snapshot's manifest records, for every file merged, its
size, mtime and where its rows are, and rows of a file that has since
changed or gone are left out.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.fs as pafs

from .store import COMPACT_DIR, StudyStore, check_names, open_parquet, read_files, write_table_atomic

SNAPSHOT_KEY = b"deqlab.snapshot"  # schema metadata: JSON manifest, see `_Snapshot`
SNAPSHOT_VERSION = 1


def snapshot_path(study_dir, kind: str = "trials") -> str:
    """Where `compact` writes the snapshot of one kind of per-trial file (`trials` or `traces`)."""
    return StudyStore(study_dir).at(f"{COMPACT_DIR}/{kind}.parquet")


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


def _read_snapshot(fs: pafs.FileSystem, path: str, skipped: list, cache=None) -> Optional[_Snapshot]:
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
            table = open_parquet(f).read()
        table.validate(full=True)
        check_names(table)
        snap = _Snapshot.parse(table)
    except Exception as exc:  # corrupt, truncated, not ours: the per-trial files still hold everything
        skipped.append(f"{path}: {type(exc).__name__}: {exc}")
        warnings.warn(f"skipping unreadable results snapshot {path} ({exc}); reading the per-trial files instead",
                      stacklevel=5)  # the caller of load
        return None
    if cache is not None:
        cache.put(info, snap)
    return snap


def _plan(store: StudyStore, kind: str, skipped: list, cache=None):
    """(folder's files, snapshot or None, names the snapshot covers, files to open) for one kind of a study.

    One listing of the folder decides which files the snapshot covers (same
    name, size and mtime); only the others need opening.
    """
    fs, target = store.fs, store.at(f"{COMPACT_DIR}/{kind}.parquet")
    infos = store.files(kind, skipped)
    snap = _read_snapshot(fs, target, skipped, cache)
    if snap is None:
        return infos, None, set(), infos
    covered = {i.base_name for i in infos if snap.covers(i)}
    if isinstance(fs, pafs.LocalFileSystem):
        covered -= _touched_since(target, infos, covered)
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


def read_kind(store: StudyStore, kind: str, skipped: list, cache=None) -> list[pa.Table]:
    """Every readable table of one kind of a study: the snapshot's still-valid rows, then the files it lacks.

    `cache` (a reader.TableCache) keeps what was read for the next call.
    """
    infos, snap, covered, todo = _plan(store, kind, skipped, cache)
    part = snap.rows(covered) if snap is not None else None
    tables = ([part] if part is not None else []) + [t for _, t in read_files(store.fs, todo, skipped, cache)]
    if cache is not None:
        cache.retain(store.at(kind), {i.path for i in infos})
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
    store = StudyStore(study_path)
    fs = store.fs
    if not store.exists():
        raise FileNotFoundError(f"cannot compact {store.base}: not a study directory")
    counts = {"trials": 0}
    for kind in ("trials", "traces"):
        target = store.at(f"{COMPACT_DIR}/{kind}.parquet")
        _, snap, covered, todo = _plan(store, kind, [])
        # each file's size and mtime come from the listing, taken before it is read: a file replaced in
        # between is merged with its old stamp, so `load` sees it as changed and re-reads it
        fresh = [(info.base_name, (info.size, info.mtime_ns), t, frozenset(t.column_names))
                 for info, t in read_files(fs, todo, [])
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
