"""`deqlab bench`: a study's trained models timed side by side (prediction and one training step), with
speed-ups against a baseline group."""

from __future__ import annotations

import argparse
import sys

from .common import EXIT_OK, csv_list, positive_int


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def configure_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY_DIR", help="a study directory (local path or s3://, gs:// URI)")
    p.add_argument("--by", type=csv_list, default=("init",),
                   help="hyperparameters to group the trials by (default: init); per seed: init,seed")
    p.add_argument("--baseline", default=None,
                   help="speed-ups against this group, e.g. init=zeros (matched on the other --by columns)")
    p.add_argument("--batch", type=positive_int, default=None,
                   help="samples per timed call (default: each trial's data.batch_size, its training batch)")
    p.add_argument("--repeats", type=positive_int, default=20, help="timed repetitions per model (default: 20)")
    p.add_argument("--warmup", type=_count, default=2, help="untimed rounds first (default: 2)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads while timing (default: 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the models run (default: cpu)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall clock, or this process's CPU time (steadier on a shared machine; CPU only)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")


def run_bench(args: argparse.Namespace) -> int:
    from ..report.bench import check_baseline, render_json, render_markdown, summarize
    from ..report.tables import parse_baseline

    baseline = parse_baseline(args.baseline)
    trials = completed_trials(args.study, args.by)
    check_baseline([group for _, group in trials], args.by, baseline)  # before loading and timing, not after
    contenders = load_contenders(args.study, trials, args.device)
    print(f"timing {len(contenders)} trained models of {args.study}: {args.repeats} repetitions round-robin "
          f"after {args.warmup} warm-up", file=sys.stderr, flush=True)
    from ..run.bench import time_models

    result = time_models(contenders, batch=args.batch, repeats=args.repeats, warmup=args.warmup,
                         threads=args.threads, device=args.device, clock=args.clock)
    table = summarize(result.samples, args.by, baseline, {"study": args.study, **result.settings})
    sys.stdout.write(render_json(table) + "\n" if args.json else render_markdown(table))
    return EXIT_OK


def completed_trials(study: str, by) -> list[tuple[str, dict]]:
    """(trial id, its `by` values) of every completed trial of the study, from its results files."""
    import warnings

    from ..report.tables import final_epochs, group_candidates, resolve_column
    from ..results import StudyStore, load

    if not StudyStore(study).is_study():
        raise ValueError(f"no study at {study}: expected a study directory with trials/ (deqlab ls lists them)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trials = load([study], traces=False).trials
    done = final_epochs(trials) if not trials.empty else trials
    if done.empty:
        raise ValueError(f"{study} has no completed trials to time")
    columns = [resolve_column(done, b, "group column", group_candidates(done)) for b in by]
    return [(row["trial_id"], {b: _plain(row[c]) for b, c in zip(by, columns)}) for _, row in done.iterrows()]


def load_contenders(study: str, trials: list[tuple[str, dict]], device: str) -> list:
    """The trials' trained models (`deqlab.load_model`); a trial without a whole checkpoint is skipped with
    a warning line."""
    from ..results.schema import printable
    from ..run.bench import Contender
    from ..run.saved import load_model

    contenders = []
    for trial_id, group in trials:
        try:
            model, config = load_model(study, trial_id, device=device)
        except ValueError as exc:  # no checkpoint, or none whole
            print(f"warning: skipped trial {printable(trial_id)}: {printable(exc)}", file=sys.stderr)
            continue
        contenders.append(Contender(trial_id, model, config, group))
    if not contenders:
        raise ValueError(f"none of the {len(trials)} completed trials of {study} has a checkpoint to load "
                         f"(studies keep them unless their file says `checkpoint: {{every: 0}}`)")
    return contenders


def _plain(value):
    return value.item() if hasattr(value, "item") else value
