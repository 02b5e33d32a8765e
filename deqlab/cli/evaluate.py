"""`deqlab evaluate`: a study's trained model (its checkpoint) run on a test set again."""

from __future__ import annotations

import argparse
import json

from .common import EXIT_OK


def configure_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_dir", help="a study folder (local path or URI) whose trials saved checkpoints")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--trial", default=None, metavar="ID", help="the trial to evaluate")
    which.add_argument("--best", default=None, metavar="METRIC",
                       help="the completed trial best in METRIC (test_acc: highest, nfe_fwd: lowest, ...)")
    p.add_argument("--data", default=None, metavar="NAME", help="another data set's test split (default: the trial's)")
    p.add_argument("--device", default="cpu", help="cpu (default; reproduces a CPU trial exactly) or cuda")
    p.add_argument("--json", action="store_true", help="one JSON object, with the metric names of the Parquet rows")


def run_evaluate(args: argparse.Namespace) -> int:
    from ..run.saved import evaluate_saved

    m = evaluate_saved(args.study_dir, args.trial, best=args.best, data=args.data, device=args.device)
    if args.json:
        print(json.dumps(m))
        return EXIT_OK
    recorded = m["recorded_test_acc"]
    print(f"{m['trial_id']} (epoch {m['epoch']}) on {m['data']}'s test set:")
    print(f"  test acc {100 * m['test_acc']:.2f}%"
          + (f" (recorded {100 * recorded:.2f}%)" if recorded is not None and args.data is None else ""))
    print(f"  NFE fwd {m['nfe_fwd']:.3f} per sample (paper's count {m['nfe_fwd_paper']:.3f})"
          + (f" (recorded {m['recorded_nfe_fwd']:.3f})" if m["recorded_nfe_fwd"] is not None and args.data is None
             else ""))
    print(f"  residual {m['residual']:.3g}, converged {100 * m['converged_frac']:.1f}%, "
          f"{1e3 * m['infer_time_s']:.3f} ms per sample")
    return EXIT_OK
