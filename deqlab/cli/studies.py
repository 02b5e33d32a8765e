"""`deqlab run`, `resume` and `ls`: studies on Ray Tune, and what a results root holds."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..results.schema import Status
from .common import EXIT_FAILED, EXIT_OK, one_line, positive_int, say, storage_args

def configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML file (see studies/)")
    storage_args(p)
    p.add_argument("--name", default=None, help="run the study under another name (default: its `name`)")
    p.add_argument("--address", default=None, help="join a Ray cluster ('auto' after `ray up`); default: a local Ray")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray (default: all)")


def run_run(args: argparse.Namespace) -> int:
    from ..study import load_study, parse_study
    from ..study.driver import run_study

    spec = load_study(args.study)
    if args.name:
        spec = parse_study({**spec.model_dump(mode="json"), "name": args.name}, args.study)
    print(f"study {spec.name}: results in {args.storage}/{spec.name}", flush=True)
    outcome = run_study(spec, args.storage, say=say, address=args.address, num_cpus=args.num_cpus)
    return finish(outcome)


def finish(outcome) -> int:
    from ..study.summary import comparison_table, pareto_table, status_counts, untried_choices

    counts = status_counts(outcome.path)
    print(f"\n{outcome.spec.name}: {sum(counts.values())} trials in {outcome.seconds:.0f} s ("
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    for line in untried_choices(outcome.path, outcome.spec):
        print(f"warning: {line}; for a head-to-head comparison use `search: {{algorithm: grid}}`")
    print(comparison_table(outcome.path, outcome.spec))
    if len(outcome.spec.objectives) > 1:
        print(f"\nPareto front ({', '.join(f'{o.mode} {o.metric}' for o in outcome.spec.objectives)}):")
        print(pareto_table(outcome.path, outcome.spec))
    where = shlex.quote(str(outcome.path))
    print(f"\nresults: {outcome.path}\ndashboard: deqlab dashboard {where}\n"
          f"export: deqlab export {where} --format latex -o table.tex")
    return EXIT_OK if counts.get(Status.COMPLETED) else EXIT_FAILED


def configure_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the study's name (its folder under --storage)")
    storage_args(p)
    p.add_argument("--address", default=None, help="join a Ray cluster ('auto'); default: a local Ray")
    p.add_argument("--num-cpus", type=positive_int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--allow-changed-code", action="store_true",
                   help="resume although your own model/data module changed since the study ran")


def run_resume(args: argparse.Namespace) -> int:
    from ..results import check_name
    from ..study.driver import resume_study

    outcome = resume_study(check_name("study", args.name), args.storage, say=say, address=args.address,
                           num_cpus=args.num_cpus, allow_changed_code=args.allow_changed_code)
    return finish(outcome)


def configure_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("storage", nargs="?", default=os.environ.get("DEQLAB_STORAGE", "results"),
                   help="results root (default: $DEQLAB_STORAGE or ./results)")


def run_ls(args: argparse.Namespace) -> int:
    import warnings

    from ..results import printable
    from ..study.summary import list_studies

    with warnings.catch_warnings(record=True) as caught:  # one line each on stderr, not Python's two
        warnings.simplefilter("always")
        text = list_studies(args.storage)
    for w in caught:
        print(f"warning: {printable(one_line(w.message))}", file=sys.stderr)
    print(text)
    return EXIT_OK
