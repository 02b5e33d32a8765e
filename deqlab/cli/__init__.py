"""The `deqlab` command line.

Every command is one entry of a registry: a name, a help line, a function that
adds its arguments and a function that runs it and returns the exit status.
A new command (run, resume, ls, validate, export, dashboard) is one more
`register_command` call; `main` never changes.

Exit status: 0 success, 1 the command ran but its check failed (e.g. the demo's
seed check), 2 a usage or input error. Input errors (`DataError`, `ValueError`)
are printed as one `error: ...` line on stderr, without a traceback.

    deqlab demo --out demo_out          # the seed check: y = 2x for every init and solver
    deqlab data get mnist               # fetch and verify a data set
    deqlab data list                    # what is available, what is present
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from .. import __version__
from . import dashboard, datasets, demo, evaluate, export, models, studies, train
from .common import COMMANDS, EXIT_FAILED, EXIT_OK, EXIT_USAGE, one_line, register_command
from .dashboard import dashboard_app, dashboard_command

# The command table: `deqlab --help` lists them in this order.
register_command("run", "run a study (YAML) on Ray Tune + Optuna and print the comparison",
                 studies.configure_run, studies.run_run)
register_command("resume", "continue an interrupted study", studies.configure_resume, studies.run_resume)
register_command("validate", "check study files without running them", train.configure_validate, train.run_validate)
register_command("ls", "list the studies in a results root: trials by status, best values",
                 studies.configure_ls, studies.run_ls)
register_command("train", "train one configuration (YAML) without Ray and write its results",
                 train.configure_train, train.run_train)
register_command("evaluate", "run a study's trained model (its checkpoint) on a test set again",
                 evaluate.configure_evaluate, evaluate.run_evaluate)
register_command("demo", "run the seed check (y = 2x) for every init mode and both solver kinds",
                 demo.configure_demo, demo.run_demo)
register_command("data", "fetch and list data sets", datasets.configure_data, datasets.run_data)
register_command("models", "list the models: built in and installed plugins", models.configure_models, models.run_models)
register_command("export", "comparison table (LaTeX, Markdown, CSV) of completed trials",
                 export.configure_export, export.run_export)
register_command("dashboard", "serve the Streamlit dashboard over study results (read-only)",
                 dashboard.configure_dashboard, dashboard.run_dashboard)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deqlab",
        description="Compare deep equilibrium models and their solvers, with honest NFE counts.",
    )
    parser.add_argument("--version", action="version", version=f"deqlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an input error")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for cmd in COMMANDS.values():
        cmd.configure(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def _input_errors() -> tuple[type, ...]:
    """ValueError, and DataError once deqlab.data is loaded (not imported here: `--help` stays light)."""
    data = sys.modules.get("deqlab.data")
    return (ValueError, data.DataError) if data is not None else (ValueError,)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv (default: sys.argv[1:]), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at the interpreter's exit
        return code
    except _input_errors() as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a study says how to continue it (`deqlab resume NAME`)
        print(f"error: {exc}" if str(exc) else "error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`deqlab ls | head`): what it wanted, it has
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_OK


__all__ = ["main", "build_parser", "register_command", "COMMANDS", "dashboard_app", "dashboard_command",
           "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE"]
