"""A study's trained models back: `load_model` (the best or a named trial's newest checkpoint, rebuilt) and
`evaluate_saved` (its test set run again, as the training loop ran it).

A model is rebuilt from its checkpoint's `meta.json` alone (TrainConfig, input shape, classes) through the
same `model_of_shape` the training loop uses, so every model the loop can train can be loaded; no data is
read until a test set is asked for.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..results import METRICS, Status, StudyStore, load, metric_info
from ..results import checkpoints as files
from .checkpoint import load_state
from .config import TrainConfig
from .loop import dataset_of, evaluate, model_of_shape


def choose_trial(store: StudyStore, trial_id: Optional[str] = None, best: Optional[str] = None) -> files.CheckpointRef:
    """The newest whole checkpoint of trial `trial_id`, or of the completed trial best in metric `best`
    (direction from the metric catalogue), or of the study's only trial; a ValueError (one line) when there
    is no such study, trial or checkpoint."""
    if not store.exists() or not store.is_study():
        raise ValueError(f"no study at {store.path}")
    if trial_id is not None and best is not None:
        raise ValueError("name a trial or ask for the best by a metric, not both")
    saved = sorted({ref.trial_id for ref in files.find(store)})
    if trial_id is None and best is None:
        if len(saved) != 1:
            raise ValueError(f"{store.path} has {len(saved)} trials with a checkpoint"
                             + (f" ({', '.join(saved[:5])}{', ...' if len(saved) > 5 else ''})" if saved else "")
                             + ": name one (--trial ID) or ask for the best (--best test_acc)")
        trial_id = saved[0]
    elif best is not None:
        trial_id = _best_trial(store, best, saved)
    elif trial_id not in saved:
        known = store.trial_ids()
        raise ValueError(f"trial {trial_id!r} has no checkpoint in {store.path}" if trial_id in known
                         else f"no trial {trial_id!r} in {store.path}")
    ref, skipped = files.newest_whole(store, trial_id)
    if ref is None:
        raise ValueError(f"trial {trial_id!r} has no whole checkpoint in {store.path}: {skipped[0]}")
    return ref


def _best_trial(store: StudyStore, metric: str, saved: list) -> str:
    info = metric_info(metric)
    if metric not in METRICS or info.mode is None:
        ranked = [m for m in METRICS if metric_info(m).mode is not None]
        raise ValueError(f"unknown metric {metric!r} for --best; valid: {', '.join(ranked)}")
    rows = load(store.path, traces=False).trials
    if rows.empty:
        raise ValueError(f"no trials in {store.path}")
    final = rows.sort_values("epoch", kind="stable").groupby("trial_id").tail(1)
    final = final[(final.status == Status.COMPLETED) & final.trial_id.isin(saved) & final[metric].notna()]
    if final.empty:
        raise ValueError(f"no completed trial with a checkpoint and a {metric} in {store.path}")
    pick = final[metric].idxmax() if info.mode == "max" else final[metric].idxmin()
    return str(final.loc[pick, "trial_id"])


def load_checkpoint(study_dir, trial_id: Optional[str] = None, *, best: Optional[str] = None,
                    device="cpu") -> tuple[nn.Module, TrainConfig, files.CheckpointRef]:
    """(model in eval mode on `device`, its TrainConfig, the checkpoint it came from)."""
    store = StudyStore(study_dir)
    ref = choose_trial(store, trial_id, best)
    config = TrainConfig.model_validate(ref.meta["train_config"])
    shape = _shape(ref.meta, config)
    model = model_of_shape(config, shape["input_shape"], shape["num_classes"])
    model.load_state_dict(load_state(store.fs, ref.path)["model"])
    return model.to(torch.device(device)).eval(), config, ref


def _shape(meta: dict, config: TrainConfig) -> dict:
    """What rebuilding a model needs (input shape, classes), from meta.json; a checkpoint written before
    meta.json recorded them (deqlab 0.2.0 before `load_model`) gets them from its data set's table entry
    loaded once."""
    if "input_shape" in meta:
        return meta
    splits = dataset_of(config)
    return {"input_shape": list(splits.input_shape), "num_classes": int(splits.num_classes)}


def _threads(store: StudyStore, meta: dict) -> Optional[int]:
    """The torch threads the trial trained with (meta.json; an older checkpoint: its study's trainer)."""
    if "torch_threads" in meta:
        return int(meta["torch_threads"])
    from ..results import STUDY_FILE

    try:
        spec = store.read_yaml(STUDY_FILE)
    except ValueError:
        return None
    trainer = spec.get("trainer") if spec else None
    if not spec:
        return None  # a `deqlab train` run: torch's default, as it trained
    cpus = trainer.get("cpus_per_worker", 1.0) if isinstance(trainer, dict) else 1.0
    return max(1, math.ceil(float(cpus) - 1e-9))  # as deqlab.study.trial.threads_for gave the trial


def load_model(study_dir, trial_id: Optional[str] = None, *, best: Optional[str] = None,
               device="cpu") -> tuple[nn.Module, TrainConfig]:
    """A trained model of a study and its TrainConfig.

    `trial_id` names the trial; `best="test_acc"` (any catalogued metric with a direction:
    `nfe_fwd` is lowest-best) picks the best completed trial; with neither, the study's only trial. The
    model is the trial's newest whole checkpoint (its final epoch when it finished), in eval mode, on
    `device` (CPU unless asked).

        model, config = deqlab.load_model("results/quickstart", best="test_acc")
    """
    model, config, _ = load_checkpoint(study_dir, trial_id, best=best, device=device)
    return model, config


def evaluate_saved(study_dir, trial_id: Optional[str] = None, *, best: Optional[str] = None,
                   data: Optional[str] = None, device="cpu") -> dict:
    """Run a saved model's test set again: the metrics the training loop reports for it (`test_acc`,
    `nfe_fwd`, `nfe_fwd_paper`, `residual`, `infer_time_s`, ...), plus `trial_id`, `epoch`, `data` and the
    values recorded for that epoch (`recorded_test_acc`, ...). On its own test set (`data` None) with the
    batch size and thread count it was trained with, `test_acc` and `nfe_fwd` equal the recorded ones."""
    from ..data import make_loaders

    model, config, ref = load_checkpoint(study_dir, trial_id, best=best, device=device)
    d = config.data
    splits = dataset_of(config, data)
    # an older checkpoint's test batch: the config's (a num_workers 0 trial or `deqlab train`)
    test = make_loaders(splits, ref.meta.get("test_batch_size", d.batch_size), seed=config.seed)[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(_threads(StudyStore(study_dir), ref.meta) or threads)  # reductions follow the threads
    try:
        model.set_fixed_depth(None)
        metrics = evaluate(model, test, torch.device(device))
    finally:
        torch.set_num_threads(threads)
    out = {"trial_id": ref.trial_id, "epoch": ref.epoch, "data": splits.name, **metrics}
    rows = load(StudyStore(study_dir).path, traces=False).trials
    row = rows[(rows.trial_id == ref.trial_id) & (rows.epoch == ref.epoch)]
    for k in ("test_acc", "nfe_fwd"):
        value = float(row[k].iloc[0]) if len(row) and not math.isnan(row[k].iloc[0]) else None
        out[f"recorded_{k}"] = value
    return out


__all__ = ["load_model", "load_checkpoint", "evaluate_saved", "choose_trial"]
