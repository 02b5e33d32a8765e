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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from . import __version__
from .results.schema import Status

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add a subcommand; a name is registered once (no silent overwrite)."""
    if name in COMMANDS:
        raise ValueError(f"command {name!r} is already registered")
    COMMANDS[name] = Command(name, help, configure, run)


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


# --------------------------------------------------------------------------- demo


def _configure_demo(p: argparse.ArgumentParser) -> None:
    # no deqlab.run.seed_check import here: it loads torch, and `deqlab --help` must stay fast
    p.add_argument("--out", default="demo_out", help="folder for the trajectory figure (default: demo_out)")
    p.add_argument("--steps", type=_positive_int, default=None,
                   help="full-batch Adam steps per model (default: seed_check.DEFAULT_STEPS, as in the article)")
    p.add_argument("--seed", type=int, default=0, help="torch seed for every model (default: 0)")
    p.add_argument("--workers", type=_positive_int, default=_default_workers(),
                   help="models trained in parallel processes (default: %(default)s, at most 2)")
    p.add_argument("--inits", type=_csv, default=("zeros", "skipreg", "skip"),
                   help="comma-separated init modes (default: zeros,skipreg,skip)")
    p.add_argument("--solvers", type=_csv, default=("anderson", "continuous"),
                   help="comma-separated solvers (default: anderson,continuous)")


def _default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def _run_demo(args: argparse.Namespace) -> int:
    from .run import seed_check as sc
    from .run import seed_figure

    args.steps = args.steps or sc.DEFAULT_STEPS
    inits, solvers = sc.check_inputs(args.inits, args.solvers, args.steps, args.seed)
    print(f"seed check: learn y = 2x on x = 1..10, then predict x = {sc.PROBE_X:g} "
          f"({len(inits) * len(solvers)} models, {args.steps} Adam steps each, seed {args.seed})", flush=True)
    start = time.perf_counter()
    rows = sc.run_seed_check(inits=inits, solvers=solvers, steps=args.steps, seed=args.seed, workers=args.workers)
    print(sc.format_table(rows))
    shown = seed_figure.figure_model(rows)
    path = Path(args.out) / "trajectories.png"
    traj = seed_figure.trajectory_figure(
        shown.model, x=sc.PROBE_X, starts=10, depth=100, path=path, seed=args.seed,
        title=f"{shown.init}/{shown.solver} cell at x = {sc.PROBE_X:g}: 10 starts in [0, 10]",
    )
    settled = traj.values.shape[0] - 1
    print(f"trajectories ({shown.init}/{shown.solver} cell, 10 starts in [0, 10], settled after {settled} "
          f"of at most 100 steps at {float(traj.final.mean()):.4f}): {traj.path}")
    print(f"total time {time.perf_counter() - start:.1f} s")
    print(sc.verdict(rows))
    return EXIT_OK if all(r.passed for r in rows) else EXIT_FAILED


# --------------------------------------------------------------------------- data


def _configure_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="{get,list}", required=True)
    get = sub.add_parser("get", help="fetch a data set into the data folder and verify its checksums")
    get.add_argument("name", help="data set name (see `deqlab data list`)")
    get.add_argument("--data-dir", default=None, help="data folder (default: $DEQLAB_DATA or ~/.cache/deqlab/data)")
    lst = sub.add_parser("list", help="list the data sets and whether they are present")
    lst.add_argument("--data-dir", default=None, help="data folder (default: $DEQLAB_DATA or ~/.cache/deqlab/data)")


def _run_data(args: argparse.Namespace) -> int:
    from . import data

    if args.data_command == "get":
        path = data.fetch(args.name, data_dir=args.data_dir)
        print(f"{args.name}: ready in {path}")
        return EXIT_OK
    root = data.resolve_data_dir(args.data_dir)
    rows = [(name, *data.status(name, root)) for name in data.DATASETS]
    header = ("name", "status", "how to get it")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print(f"data folder: {root}")
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return EXIT_OK


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="YAML file with one training configuration (see deqlab.run.TrainConfig)")
    p.add_argument("--storage", default="results", help="results root (local path or s3://, gs:// URI)")
    p.add_argument("--name", default=None, help="study name (default: the config file's stem)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _read_train_config(path: Path):
    """A single-run training config from YAML, with one-line errors."""
    from pydantic import ValidationError

    from .solvers.options import describe_validation_error
    from .study.yaml_io import read_yaml
    from .run.config import TrainConfig

    if not path.is_file():
        raise ValueError(f"no such config file: {path}")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of settings at the top level")
    try:
        return TrainConfig(**raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {describe_validation_error(exc)}") from None


def _run_train(args: argparse.Namespace) -> int:
    """One configuration without Ray, writing the same Parquet files a study trial writes."""
    from .results import TRAIN_FILE, check_name
    from .run.one import run_one

    path = Path(args.config)
    config = _read_train_config(path)
    study = check_name("study", args.name or path.stem)
    trial = f"train-{config.config_hash()}"
    run = run_one(config, study=study, trial_id=trial, storage=args.storage, progress=not args.quiet,
                  save_config_as=TRAIN_FILE)
    result, final = run.result, run.result.final
    print(f"{study}/{trial}: {result.status}" + (f" ({result.error})" if result.error else ""))
    if final:
        print(f"  test acc {100 * final['test_acc']:.1f}%  NFE fwd {final['nfe_fwd']:.2f}  NFE bwd {final['nfe_bwd']:.2f}"
              f"  epoch time {final['epoch_time_s']:.1f} s")
    print(f"  results: {run.path}/trials/{trial}.parquet")
    return EXIT_OK if result.status == Status.COMPLETED else EXIT_FAILED


# --------------------------------------------------------------------------- studies


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", help="study YAML file (see studies/)")
    _storage_args(p)
    p.add_argument("--name", default=None, help="run the study under another name (default: its `name`)")
    p.add_argument("--address", default=None, help="join a Ray cluster ('auto' after `ray up`); default: a local Ray")
    p.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs of the local Ray (default: all)")


def _storage_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", default=os.environ.get("DEQLAB_STORAGE", "results"),
                   help="results root: a local path or s3://, gs:// URI (default: $DEQLAB_STORAGE or ./results)")


def _run_run(args: argparse.Namespace) -> int:
    from .study import load_study, parse_study
    from .study.driver import run_study

    spec = load_study(args.study)
    if args.name:
        spec = parse_study({**spec.model_dump(mode="json"), "name": args.name}, args.study)
    print(f"study {spec.name}: results in {args.storage}/{spec.name}", flush=True)
    outcome = run_study(spec, args.storage, say=_say, address=args.address, num_cpus=args.num_cpus)
    return _finish(outcome)


def _say(line: str) -> None:
    print(line, flush=True)


def _finish(outcome) -> int:
    from .study.summary import comparison_table, pareto_table, status_counts, untried_choices

    counts = status_counts(outcome.path)
    print(f"\n{outcome.spec.name}: {sum(counts.values())} trials in {outcome.seconds:.0f} s ("
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")")
    for line in untried_choices(outcome.path, outcome.spec):
        print(f"warning: {line}; for a head-to-head comparison use `search: {{algorithm: grid}}`")
    print(comparison_table(outcome.path, outcome.spec))
    if len(outcome.spec.objectives) > 1:
        print(f"\nPareto front ({', '.join(f'{o.mode} {o.metric}' for o in outcome.spec.objectives)}):")
        print(pareto_table(outcome.path, outcome.spec))
    print(f"\nresults: {outcome.path}\ndashboard: deqlab dashboard {outcome.path}")
    return EXIT_OK if counts.get(Status.COMPLETED) else EXIT_FAILED


def _configure_resume(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the study's name (its folder under --storage)")
    _storage_args(p)
    p.add_argument("--address", default=None, help="join a Ray cluster ('auto'); default: a local Ray")
    p.add_argument("--num-cpus", type=_positive_int, default=None, help="CPUs of the local Ray (default: all)")


def _run_resume(args: argparse.Namespace) -> int:
    from .results import check_name
    from .study.driver import resume_study

    outcome = resume_study(check_name("study", args.name), args.storage, say=_say, address=args.address,
                           num_cpus=args.num_cpus)
    return _finish(outcome)


def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("studies", nargs="+", help="study YAML file(s), or single-run training configs (deqlab train)")


def _is_train_config(path: Path) -> bool:
    """A mapping of TrainConfig's own keys and no `objectives` (the rule `parse_study` refuses it by)."""
    from .study.yaml_io import StudyError, read_yaml
    from .run.config import TrainConfig

    try:
        raw = read_yaml(path)
    except (OSError, StudyError):
        return False  # load_study says what is wrong
    return isinstance(raw, dict) and bool(raw) and "objectives" not in raw and set(raw) <= set(TrainConfig.model_fields)


def _run_validate(args: argparse.Namespace) -> int:
    from .study import describe, load_study

    for path in args.studies:
        if _is_train_config(Path(path)):
            c = _read_train_config(Path(path))
            print(f"{path}: ok (a single-run training config: deqlab train {path})\n"
                  f"  {c.data.name} / {c.model.name}, {c.deq.init} init, {c.deq.solver}, "
                  f"{c.pretrain_epochs}+{c.epochs} epochs")
        else:
            print(f"{path}: ok\n{describe(load_study(path))}")
    return EXIT_OK


def _configure_ls(p: argparse.ArgumentParser) -> None:
    p.add_argument("storage", nargs="?", default=os.environ.get("DEQLAB_STORAGE", "results"),
                   help="results root (default: $DEQLAB_STORAGE or ./results)")


def _run_ls(args: argparse.Namespace) -> int:
    import warnings

    from .study.summary import list_studies

    with warnings.catch_warnings(record=True) as caught:  # one line each on stderr, not Python's two
        warnings.simplefilter("always")
        text = list_studies(args.storage)
    for w in caught:
        print(f"warning: {_one_line(w.message)}", file=sys.stderr)
    print(text)
    return EXIT_OK


register_command("run", "run a study (YAML) on Ray Tune + Optuna and print the comparison", _configure_run, _run_run)
register_command("resume", "continue an interrupted study", _configure_resume, _run_resume)
register_command("validate", "check study files without running them", _configure_validate, _run_validate)
register_command("ls", "list the studies in a results root: trials by status, best values", _configure_ls, _run_ls)
register_command("train", "train one configuration (YAML) without Ray and write its results", _configure_train, _run_train)
register_command("demo", "run the seed check (y = 2x) for every init mode and both solver kinds", _configure_demo, _run_demo)
register_command("data", "fetch and list data sets", _configure_data, _run_data)


# --------------------------------------------------------------------------- export / dashboard


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="+", metavar="DIR", help="study directories, or results roots holding studies")
    p.add_argument("--by", type=_csv, default=("init", "solver"),
                   help="hyperparameters to group by (default: init,solver); `init` finds param.deq.init; "
                        "a continuous one in bins: tol:4; several studies apart: study,init,solver")
    p.add_argument("--metrics", type=_csv, default=("test_acc", "nfe_fwd", "epoch_time_s"),
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


def _results_dirs(paths: Sequence[str]) -> list[str]:
    from .report.views import study_dirs
    from .results import is_uri

    missing = [p for p in paths if not is_uri(p) and not Path(p).is_dir()]
    if missing:
        raise ValueError(f"no such results directory: {', '.join(missing)}")
    return study_dirs(paths)


def _run_export(args: argparse.Namespace) -> int:
    import warnings

    from .report import tables as export
    from .results import load, load_spec

    dirs = _results_dirs(args.dirs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reported below, one line per file
        res = load(dirs, traces=False)
    for skipped in res.skipped:
        print(f"warning: skipped unreadable results file {skipped}", file=sys.stderr)
    specs = []
    for d in dirs:
        try:
            specs.append(load_spec(d))
        except ValueError as exc:
            print(f"warning: {exc}", file=sys.stderr)
    table = export.aggregate(res.trials, args.by, args.metrics, baseline=export.parse_baseline(args.baseline),
                             ratio_metric=args.ratio_of, modes=export.objective_modes(specs))
    from .report.tables import pooled_hardware

    for line in pooled_hardware(res.trials, args.by):  # times from different machines in one mean
        print(f"warning: {line}", file=sys.stderr)
    for warning in table.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = export.render(table, args.format, caption=args.caption, label=args.label, tabular_only=args.tabular_only)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}: {len(table.frame)} groups, {int(table.frame['n'].sum())} completed trials")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {value}")
    return value


def _configure_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="*", metavar="DIR", default=["results"],
                   help="study directories, or results roots holding studies (default: results)")
    p.add_argument("--port", type=_port, default=8501, help="port to serve on (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the results)")


def dashboard_app() -> Path:
    """The Streamlit script: $DEQLAB_DASHBOARD_APP, else dashboard/app.py of the checkout deqlab runs from.

    The app is a top-level script, not part of the package (deqlab itself
    never imports Streamlit UI code), so it is found next to the package of an
    editable install (`pip install -e .`, what the Makefile does).
    """
    env = os.environ.get("DEQLAB_DASHBOARD_APP")
    app = Path(env) if env else Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    if not app.is_file():
        raise ValueError(f"dashboard app not found at {app}: run deqlab from its checkout (pip install -e .) "
                         f"or set DEQLAB_DASHBOARD_APP to dashboard/app.py")
    return app


def dashboard_command(args: argparse.Namespace) -> tuple[list[str], dict]:
    """(argv, environment) of the Streamlit server; the directories travel in $DEQLAB_DASHBOARD_DIRS."""
    from .results import absolute

    dirs = [absolute(d) for d in _results_dirs(args.dirs)]
    argv = [sys.executable, "-m", "streamlit", "run", str(dashboard_app()),
            "--server.headless", "true", "--server.address", args.host, "--server.port", str(args.port),
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
            "--client.showErrorDetails", "none"]  # no server tracebacks or paths in the browser
    return argv, {**os.environ, "DEQLAB_DASHBOARD_DIRS": os.pathsep.join(dirs)}


def _run_dashboard(args: argparse.Namespace) -> int:
    from .report.views import split_dirs

    argv, env = dashboard_command(args)
    print(f"deqlab dashboard on http://{args.host}:{args.port} (read-only) for "
          f"{', '.join(split_dirs(env['DEQLAB_DASHBOARD_DIRS']))}", flush=True)
    os.execvpe(argv[0], argv, env)  # the server replaces this process: signals reach it directly
    return EXIT_FAILED  # pragma: no cover (exec does not return)


register_command("export", "comparison table (LaTeX, Markdown, CSV) of completed trials",
                 _configure_export, _run_export)
register_command("dashboard", "serve the Streamlit dashboard over study results (read-only)",
                 _configure_dashboard, _run_dashboard)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deqlab",
        description="Compare deep equilibrium models and their solvers, with honest NFE counts.",
    )
    parser.add_argument("--version", action="version", version=f"deqlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}", required=True)
    for cmd in COMMANDS.values():
        cmd.configure(sub.add_parser(cmd.name, help=cmd.help, description=cmd.help))
    return parser


def _one_line(exc: BaseException) -> str:
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def _input_errors() -> tuple[type, ...]:
    """ValueError, and DataError once deqlab.data is loaded (importing it would load torch for `--help`)."""
    data = sys.modules.get(f"{__package__}.data")
    return (ValueError, data.DataError) if data is not None else (ValueError,)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse argv (default: sys.argv[1:]), run the command, return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command].run(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at the interpreter's exit
        return code
    except _input_errors() as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:  # a study says how to continue it (`deqlab resume NAME`)
        print(f"error: {exc}" if str(exc) else "error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`deqlab ls | head`): what it wanted, it has
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
