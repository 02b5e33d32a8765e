"""`deqlab train` (one configuration without Ray) and `deqlab validate` (studies and train configs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..results.schema import Status
from .common import EXIT_FAILED, EXIT_OK

def configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file with one training configuration (see deqlab.run.TrainConfig)")
    p.add_argument("--storage", default="results", help="results root (local path or s3://, gs:// URI)")
    p.add_argument("--name", default=None, help="study name (default: the config file's stem)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="save a checkpoint every N epochs and after the last (0: none; default 1)")
    p.add_argument("--checkpoint-keep", type=int, default=2, metavar="K",
                   help="checkpoints kept, newest first (default 2)")


def read_train_config(path: Path):
    """A single-run training config from YAML, with one-line errors."""
    from pydantic import ValidationError

    from ..solvers.options import describe_validation_error
    from .. import plugins
    from ..study.spec import anchor_data_path
    from ..study.yaml_io import read_yaml
    from ..run.config import TrainConfig

    if not path.is_file():
        raise ValueError(f"no such config file: {path}")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level")
    plugins.add_folder(path.resolve().parent)  # your own modules beside the config
    raw = anchor_data_path(raw, path.resolve().parent)
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {describe_validation_error(exc)}") from None


def run_train(args: argparse.Namespace) -> int:
    """One configuration without Ray, writing the same Parquet files a study trial writes."""
    from pydantic import ValidationError

    from ..results import TRAIN_FILE, check_name
    from ..run.checkpoint import Checkpointing
    from ..run.config import CheckpointSpec
    from ..run.one import run_one
    from ..solvers.options import describe_validation_error

    path = Path(args.config)
    config = read_train_config(path)
    try:
        policy = CheckpointSpec(every=args.checkpoint_every, keep=args.checkpoint_keep)
    except ValidationError as exc:
        raise ValueError(f"--checkpoint-every/--checkpoint-keep: {describe_validation_error(exc)}") from None
    study = check_name("study", args.name or path.stem)
    trial = f"train-{config.config_hash()}"
    run = run_one(config, study=study, trial_id=trial, storage=args.storage, progress=not args.quiet,
                  save_config_as=TRAIN_FILE, checkpointing=Checkpointing(policy) if policy.enabled else None,
                  local_checkpoints=True)
    result, final = run.result, run.result.final
    print(f"{study}/{trial}: {result.status}" + (f" ({result.error})" if result.error else ""))
    if final:
        print(f"  test acc {100 * final['test_acc']:.1f}%  NFE fwd {final['nfe_fwd']:.2f}  NFE bwd {final['nfe_bwd']:.2f}"
              f"  epoch time {final['epoch_time_s']:.1f} s")
    print(f"  results: {run.path}/trials/{trial}.parquet")
    if policy.enabled:
        print(f"  model: {run.path}/checkpoints/{trial}/ (deqlab.load_model({run.path!r}))")
    return EXIT_OK if result.status == Status.COMPLETED else EXIT_FAILED


def configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("studies", nargs="+", help="study YAML file(s), or single-run training configs (deqlab train)")


def is_train_config(path: Path) -> bool:
    """A mapping of TrainConfig's own keys and no `objectives` (the rule `parse_study` refuses it by)."""
    from ..study.yaml_io import StudyError, read_yaml
    from ..run.config import TrainConfig

    try:
        raw = read_yaml(path)
    except (OSError, StudyError):
        return False  # load_study says what is wrong
    return isinstance(raw, dict) and bool(raw) and "objectives" not in raw and set(raw) <= set(TrainConfig.model_fields)


def run_validate(args: argparse.Namespace) -> int:
    """Each file checked as `deqlab run` checks it before Ray; your own model and data are also built and
    tried on two samples (which imports them, and torch: a study of built-in names imports neither)."""
    from ..study import describe, load_study

    for path in args.studies:
        if is_train_config(Path(path)):
            c = read_train_config(Path(path))
            tried = []
            if c.own_code():
                from ..run.preflight import try_config

                tried = [try_config(c)]
            print(f"{path}: ok (a single-run training config: deqlab train {path})\n"
                  f"  {c.data.name} / {c.model.name}, {c.deq.init} init, {c.deq.solver}, "
                  f"{c.pretrain_epochs}+{c.epochs} epochs" + "".join(f"\n  tried: {line}" for line in tried))
        else:
            from ..study.own_code import names_own_code, preflight

            spec = load_study(path)
            tried = preflight(spec) if names_own_code(spec) else []
            print(f"{path}: ok\n{describe(spec)}" + "".join(f"\n  tried: {line}" for line in tried))
    return EXIT_OK
