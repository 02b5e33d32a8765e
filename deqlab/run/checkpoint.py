"""A run's state as a checkpoint: what is saved, how it is restored, which one a resumed run starts from.

The state is everything the rest of the run depends on, so that on CPU a run interrupted after epoch k and
resumed from its checkpoint ends bit-identical to one never interrupted: the model's and optimiser's state
dicts, the LR schedule, the epoch, and every random number generator the loop draws from (torch's global
and CUDA ones, numpy's, Python's, and the training loader's shuffle generator). No data: a checkpoint of
the paper's MNIST MLP is its weights plus Adam's two moments (docs/benchmarks.md gives its size); with
`deq.reuse: epoch` it also holds the kept fixed points (one state per training sample: `reuse_buffer_bytes`).
The files and their checks are `deqlab.results.checkpoints`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import random
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
import torch

from ..results import StudyStore
from ..results import checkpoints as files
from .config import CheckpointSpec

log = logging.getLogger("deqlab.checkpoint")


@dataclass
class Checkpointing:
    """How one run checkpoints: the policy, what meta.json records, whether this process writes (rank 0),
    and the state it starts from (None: epoch 0)."""

    policy: CheckpointSpec
    meta: dict = field(default_factory=dict)   # study, trial_id, tune_config, train_config
    writes: bool = True
    start: Optional[dict] = None

    def due(self, epoch: int, last_epoch: int) -> bool:
        return self.policy.due(epoch, last_epoch)


def capture(run, epoch: int) -> dict:
    """The run's state after epoch `epoch` (a `loop._Run`)."""
    loader_gen = getattr(run.train_loader, "generator", None)
    kept = {name: r.buffer.state_dict() for name, r in _reuses(run)}
    return {
        "format": files.FORMAT,
        "epoch": int(epoch),
        "model": run.model.state_dict(),
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict() if run.sched is not None else None,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy": _numpy_state(),
            "python": random.getstate(),
            "loader": loader_gen.get_state() if loader_gen is not None else None,
        },
        **({"reuse": kept} if kept else {}),
    }


def _reuses(run):
    """The run's fixed-point reuse buffers by name (none unless deq.reuse: epoch)."""
    return [(name, r) for name, r in (("train", getattr(run, "reuse_train", None)),
                                      ("test", getattr(run, "reuse_test", None))) if r is not None]


def restore(run, state: dict) -> int:
    """Put a captured state back into a freshly prepared run; returns the first epoch still to train."""
    run.model.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    if run.sched is not None and state.get("scheduler") is not None:
        run.sched.load_state_dict(state["scheduler"])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    _set_numpy_state(rng["numpy"])
    random.setstate(rng["python"])
    loader_gen = getattr(run.train_loader, "generator", None)
    if loader_gen is not None and rng.get("loader") is not None:
        loader_gen.set_state(rng["loader"])
    kept = state.get("reuse") or {}
    for name, r in _reuses(run):
        if name in kept:
            r.buffer.load_state_dict(kept[name])
    return int(state["epoch"]) + 1


def _numpy_state() -> dict:
    """numpy's global RNG state as tensors and plain numbers: `torch.load(weights_only=True)` reads it back
    (no pickled objects, so a checkpoint from someone else's study cannot run code when loaded)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def _set_numpy_state(s: dict) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


@contextmanager
def written(run, epoch: int, meta: dict) -> Iterator[str]:
    """A local temporary checkpoint folder of the run after `epoch` (state.pt, then meta.json), removed on exit:
    hand it to Ray's `report(checkpoint=Checkpoint.from_directory(folder))`, which copies it to storage."""
    buffer = io.BytesIO()
    torch.save(capture(run, epoch), buffer)
    data = buffer.getvalue()
    with tempfile.TemporaryDirectory(prefix="deqlab-ckpt-") as folder:
        with open(os.path.join(folder, files.STATE_FILE), "wb") as f:
            f.write(data)
        # what rebuilding the model and re-running its test set needs without the data (deqlab.load_model)
        shape = {"input_shape": list(run.input_shape), "num_classes": run.num_classes,
                 "test_batch_size": run.test_loader.batch_size, "torch_threads": torch.get_num_threads()}
        info = files.make_meta(data, **meta, **shape, epoch=int(epoch), written_at=time.time())
        with open(os.path.join(folder, files.META_FILE), "w") as f:
            json.dump(info, f, indent=1, default=str)
        yield folder


def load_state(fs, folder: str) -> dict:
    """A verified checkpoint's state (tensors on CPU); a CheckpointError when it is not whole."""
    data = files.read_state_bytes(fs, folder)
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # hash matched but torch refuses: another torch's pickle, say
        raise files.CheckpointError(f"checkpoint {folder}: {files.STATE_FILE} does not load: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != files.FORMAT:
        raise files.CheckpointError(f"checkpoint {folder}: not a deqlab checkpoint of format {files.FORMAT}")
    return state


def from_ray(checkpoint) -> Optional[dict]:
    """The state of a Ray `Checkpoint` (`tune.get_checkpoint()`), or None (logged) when it is not whole."""
    if checkpoint is None:
        return None
    try:
        return load_state(checkpoint.filesystem, checkpoint.path)
    except files.CheckpointError as exc:
        log.warning("%s; falling back to the trial's previous checkpoint", exc)
        return None


def newest_state(store: StudyStore, trial_id: str, older_than: Optional[int] = None) -> Optional[dict]:
    """The newest whole checkpoint's state of a trial in the study (optionally: before epoch `older_than`),
    skipping, with a warning each, the ones cut short or corrupt; None when it has none."""
    for ref in reversed(files.find(store, trial_id)):
        if older_than is not None and ref.epoch >= older_than:
            continue
        try:
            state = load_state(store.fs, ref.path)
        except files.CheckpointError as exc:
            log.warning("%s; falling back to the trial's previous checkpoint", exc)
            continue
        log.info("trial %s resumes from its checkpoint after epoch %d (%s)", trial_id, ref.epoch, ref.path)
        return state
    return None


__all__ = ["Checkpointing", "capture", "restore", "written", "load_state", "from_ray", "newest_state"]
