"""A study's checkpoints on disk: where they are, which are whole, how big (torch-free).

A checkpoint is a folder `checkpoint_<n>/` holding two files (docs/reliability.md "Checkpoints"):

    state.pt    torch.save of the run's state (model, optimiser, LR schedule, epoch, RNG states)
    meta.json   format, study, trial id, epoch, the trial's Tune config and TrainConfig, and the size and
                SHA-256 of state.pt; written last

A folder is a checkpoint only when its meta.json parses and state.pt has the recorded size and hash, so a
copy cut short (a kill while Ray uploads it, a full disk, a flipped bit) is never loaded: readers skip it
and take the trial's previous one. The folders live inside the study directory, under the trial folders of
Tune (`tune/<trial dir>/`), of Ray Train (`train/train-<trial>/`) or of `deqlab train` (`checkpoints/<trial>/`);
they are found by listing, never through a recorded path, so a study copied to another machine or bucket
resumes from its checkpoints there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import uuid
from dataclasses import dataclass
from typing import Optional

import pyarrow.fs as pafs

from .store import StudyStore

FORMAT = 1
STATE_FILE = "state.pt"
META_FILE = "meta.json"
PREFIX = "checkpoint_"
ROOTS = ("tune", "train", "checkpoints")  # Tune's trial folders, Ray Train's runs, `deqlab train`'s own
LOCAL_ROOT = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (missing, cut short, corrupt, of another format)."""


@dataclass(frozen=True)
class CheckpointRef:
    """One checkpoint folder of a study (its meta.json read; state.pt not yet verified)."""

    path: str            # the folder, within the study store's filesystem
    meta: dict

    @property
    def trial_id(self) -> str:
        return self.meta["trial_id"]

    @property
    def epoch(self) -> int:
        return int(self.meta["epoch"])

    @property
    def order(self) -> tuple:
        return self.epoch, float(self.meta.get("written_at", 0.0))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_meta(state_bytes: bytes, **fields) -> dict:
    """meta.json's content for a state file of these bytes."""
    return {"format": FORMAT, **fields, "state_bytes": len(state_bytes), "state_sha256": digest(state_bytes)}


MAX_META_BYTES = 1 << 20  # a meta.json is ~2 kB; a larger one is no checkpoint deqlab wrote


def read_meta(fs: pafs.FileSystem, folder: str) -> dict:
    try:
        with fs.open_input_stream(f"{folder}/{META_FILE}") as f:
            raw = f.read(MAX_META_BYTES + 1)
        if len(raw) > MAX_META_BYTES:
            raise ValueError(f"over {MAX_META_BYTES} bytes")
        meta = json.loads(raw.decode())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {folder}: unreadable {META_FILE}: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "trial_id" not in meta or "epoch" not in meta:
        raise CheckpointError(f"checkpoint {folder}: {META_FILE} is not a deqlab checkpoint of format {FORMAT}")
    return meta


def read_state_bytes(fs: pafs.FileSystem, folder: str, meta: Optional[dict] = None) -> bytes:
    """state.pt's bytes, verified against meta.json (read when not given); else a CheckpointError."""
    meta = meta if meta is not None else read_meta(fs, folder)
    try:
        with fs.open_input_stream(f"{folder}/{STATE_FILE}") as f:
            data = f.read(int(meta.get("state_bytes") or 0) + 1)  # never more than the recorded size, plus one
    except OSError as exc:
        raise CheckpointError(f"checkpoint {folder}: unreadable {STATE_FILE}: {exc}") from None
    if len(data) != meta.get("state_bytes") or digest(data) != meta.get("state_sha256"):
        raise CheckpointError(f"checkpoint {folder}: {STATE_FILE} is incomplete or corrupt "
                              f"({len(data)} bytes, {meta.get('state_bytes')} recorded; hash differs)")
    return data


def find(store: StudyStore, trial_id: Optional[str] = None) -> list[CheckpointRef]:
    """The study's checkpoints (of one trial, when given), oldest first; folders without a readable
    meta.json are left out (their state is checked when loaded: `read_state_bytes`)."""
    refs = []
    for root in ROOTS:
        for path, _ in _files(store, root):
            folder, _, name = path.rpartition("/")
            if name != META_FILE or not folder.rpartition("/")[2].startswith(PREFIX):
                continue
            if store.outside(folder):  # a link leading out of the study folder: not this study's checkpoint
                continue
            try:
                meta = read_meta(store.fs, folder)
            except CheckpointError:
                continue
            if trial_id is None or meta["trial_id"] == trial_id:
                refs.append(CheckpointRef(folder, meta))
    return sorted(refs, key=lambda r: (r.trial_id, r.order))


def latest_by_trial(store: StudyStore) -> dict[str, CheckpointRef]:
    """{trial id: its newest checkpoint} (by meta.json; unverified)."""
    out = {}
    for ref in find(store):
        out[ref.trial_id] = ref  # sorted oldest first: the last one wins
    return out


def newest_whole(store: StudyStore, trial_id: str) -> tuple[Optional[CheckpointRef], list[str]]:
    """(a trial's newest checkpoint whose state.pt matches its meta.json, or None; why each newer one was
    skipped)."""
    skipped = []
    for ref in reversed(find(store, trial_id)):
        try:
            read_state_bytes(store.fs, ref.path, ref.meta)
            return ref, skipped
        except CheckpointError as exc:
            skipped.append(str(exc))
    return None, skipped


def prune_superseded(store: StudyStore, trial_id: str, run: str) -> list[str]:
    """Delete a trial's checkpoints written by its earlier runs (meta.json's `run`: the Tune trial that wrote
    them), once the run continuing it has stored a checkpoint of its own: each resume of a long study would
    otherwise leave `keep` more behind. Returns the folders deleted."""
    old = [ref.path for ref in find(store, trial_id) if ref.meta.get("run") != run]
    for path in old:
        store.fs.delete_dir(path)
    return old


def size_on_disk(store: StudyStore) -> int:
    """Bytes of every checkpoint folder's files in the study."""
    return sum(size for root in ROOTS for path, size in _files(store, root) if f"/{PREFIX}" in path)


def _files(store: StudyStore, root: str) -> list[tuple[str, int]]:
    """(path, size) of every file under one of the study's folders. On a local disk links are neither
    followed nor listed: pyarrow's recursive listing follows them, and a results folder comes from anywhere
    (`checkpoints/x -> ..` made `deqlab ls` walk forever)."""
    if not isinstance(store.fs, pafs.LocalFileSystem):
        try:
            infos = store.fs.get_file_info(pafs.FileSelector(store.at(root), recursive=True, allow_not_found=True))
        except OSError:
            return []
        return [(i.path, i.size or 0) for i in infos if i.type == pafs.FileType.File]
    out = []
    for folder, _, names in os.walk(store.at(root)):  # followlinks=False
        for name in names:
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                st = os.lstat(path)
                if stat.S_ISREG(st.st_mode):
                    out.append((path, st.st_size))
    return out


def persist(store: StudyStore, trial_id: str, folder: str, epoch: int, keep: int) -> str:
    """Copy a local checkpoint folder into the study (`checkpoints/<trial>/checkpoint_<epoch>/`) so that it
    appears whole or not at all, then delete all but the newest `keep`: what `deqlab train` does where Ray's
    `train.report(checkpoint=...)` does it for a trial. Returns the new folder (within the store's fs)."""
    parent = store.at(f"{LOCAL_ROOT}/{trial_id}")
    target = f"{parent}/{PREFIX}{epoch:06d}"
    store.fs.create_dir(parent, recursive=True)
    if isinstance(store.fs, pafs.LocalFileSystem):  # a hidden temp folder renamed into place
        tmp = f"{parent}/.{PREFIX}{epoch:06d}.{uuid.uuid4().hex}.tmp"
        shutil.copytree(folder, tmp)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.rename(tmp, target)
    else:  # object storage: meta.json last, so a cut-short upload fails verification and is skipped
        for name in (STATE_FILE, META_FILE):
            pafs.copy_files(os.path.join(folder, name), f"{target}/{name}", destination_filesystem=store.fs)
    for old in [r for r in find(store, trial_id) if r.path.startswith(parent + "/")][:-keep]:
        store.fs.delete_dir(old.path)
    return target


__all__ = ["CheckpointRef", "CheckpointError", "find", "latest_by_trial", "newest_whole", "read_state_bytes",
           "size_on_disk",
           "persist", "make_meta", "read_meta", "prune_superseded", "FORMAT", "STATE_FILE", "META_FILE", "ROOTS"]
