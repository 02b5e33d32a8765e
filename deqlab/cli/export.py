"""`deqlab export`: a comparison table (LaTeX, Markdown, CSV) of completed trials."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import EXIT_OK, csv_list, results_dirs

def configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study directories, or results roots holding studies")
    p.add_argument("--by", type=csv_list, default=("init", "solver"),
                   help="hyperparameters to group by (default: init,solver); `init` finds param.deq.init; "
                        "a continuous one in bins: tol:4; several studies apart: study,init,solver")
    p.add_argument("--metrics", type=csv_list, default=("test_acc", "nfe_fwd", "epoch_time_s"),
                   help="metrics at the final epoch of completed trials (default: test_acc,nfe_fwd,epoch_time_s)")
    p.add_argument("--format", choices=("latex", "markdown", "csv"), default="markdown",
                   help="table format (default: markdown); latex needs booktabs and siunitx")
    p.add_argument("--caption", default="", help="LaTeX: caption text, followed by how the numbers were computed")
    p.add_argument("--label", default="", help="LaTeX: \\label of the table, e.g. tab:solvers")
    p.add_argument("--tabular-only", action="store_true",
                   help="LaTeX: only the tabular (the caption's note becomes a %% comment above it)")
    p.add_argument("-o", "--output", default=None, help="write the table to this file (default: stdout)")
    p.add_argument("--baseline", default=None,
                   help="add a ratio column against this row, e.g. init=zeros (matched on the other group columns), "
                        "with a 95%% bootstrap interval over seeds")
    p.add_argument("--ratio-of", default=None, help="metric of the ratio column (default: the first *_time_s metric)")


def run_export(args: argparse.Namespace) -> int:
    import warnings

    from ..report import tables as export
    from ..results import load, load_spec, printable

    dirs = results_dirs(args.dirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, one line per file
        res = load(dirs, traces=False)
    for skipped in res.skipped:
        print(f"warning: skipped unreadable results file {printable(skipped)}", file=sys.stderr)
    specs = []
    for d in dirs:
        try:
            specs.append(load_spec(d))
        except ValueError as exc:
            print(f"warning: {printable(exc)}", file=sys.stderr)
    table = export.aggregate(res.trials, args.by, args.metrics, baseline=export.parse_baseline(args.baseline),
                             ratio_metric=args.ratio_of, modes=export.objective_modes(specs))
    from ..report.tables import pooled_hardware

    for line in pooled_hardware(res.trials, args.by):  # times from different machines in one mean
        print(f"warning: {printable(line)}", file=sys.stderr)
    for warning in table.warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    text = export.render(table, args.format, caption=args.caption, label=args.label, tabular_only=args.tabular_only)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}: {len(table.frame)} groups, {int(table.frame['n'].sum())} completed trials")
    else:
        sys.stdout.write(text)
    return EXIT_OK
