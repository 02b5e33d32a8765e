"""deqlab from Python (a notebook): run a study or open one, and read it as DataFrames and figures.

    import deqlab
    study = deqlab.run_study("studies/quickstart.yaml", search={"num_samples": 4})  # as `deqlab run`
    study.trials                        # one row per trial: params, status, error, final metrics
    study.table(by="init,solver")       # the table `deqlab export --format csv` prints, as a DataFrame
    study.best("test_acc")              # the best completed trial (direction: the metric catalogue)
    study.figure("nfe_fwd", "test_acc", color="init")  # the dashboard's Compare scatter
    model, config = study.model(best="test_acc")        # a trained model back (deqlab.load_model)

Nothing here computes a result of its own: running is the driver of `deqlab
run`, the table is `deqlab export`'s (`report.tables.export_table`), the
figure the dashboard's (`report.figures.compare_scatter`). Reading a study
(`open_study`, `StudyResult`) goes through deqlab.results and deqlab.report
only, like the dashboard: a results folder opens without torch, Ray or the
training code; `run_study` imports the driver and `model` the training code when called.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence, Union

import pandas as pd

from .report import figures
from .report.render import csv_frame
from .report.tables import export_table, final_epochs, metric_candidates, objective_modes, resolve_column
from .report.views import DEFAULT_X, DEFAULT_Y, HEADLINE_METRIC, hyperparameters, mode_of, varying_params
from .results import Status, StudyStore, TableCache, load, load_spec, metric_info


def _names(value: Union[None, str, Sequence[str]]) -> Optional[list[str]]:
    """`"init,solver"` or `["init", "solver"]` -> ["init", "solver"] (the CLI's comma form works too)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value)


class StudyResult:
    """One study directory read back from its Parquet files; every property re-reads what changed, so a
    running study shows its newest epochs (a `TableCache` re-reads only replaced files)."""

    def __init__(self, path):
        store = StudyStore(os.fspath(path))
        if not store.is_study():
            raise ValueError(f"no study at {store.path} (no trials/ and no study.yaml there); "
                             "`deqlab ls` lists the studies of a results root")
        self.path = store.path
        self._cache = TableCache()

    def __repr__(self) -> str:
        text = ", ".join(f"{n} {s}" for s, n in self.trials["status"].value_counts().items()) or "no trials yet"
        return f"<StudyResult {self.name}: {text} at {self.path}>"

    @property
    def spec(self) -> dict:
        """The study as it was run (study.yaml), as a mapping; {} when there is none."""
        return load_spec(self.path)

    @property
    def name(self) -> str:
        return self.spec.get("name") or os.path.basename(self.path.rstrip("/"))

    @property
    def epochs(self) -> pd.DataFrame:
        """Every epoch row of every trial, the Parquet columns as written (`param.*`, metrics, provenance).
        An unreadable file is skipped with a warning naming it."""
        return load(self.path, traces=False, cache=self._cache).trials

    @property
    def trials(self) -> pd.DataFrame:
        """One row per trial: its last epoch (params, status, error, final metrics), plus `epochs` (rows
        written) and `total_time_s` (the sum of its epoch times)."""
        return final_epochs(self.epochs, statuses=None)

    def _modes(self) -> dict[str, str]:
        return objective_modes([self.spec])

    def best(self, metric: Optional[str] = None, mode: Optional[str] = None) -> pd.Series:
        """The completed trial with the best final `metric` (default: the study's first objective), as its
        row of `trials`. The direction is the study's objective for that metric, else the catalogue's
        (deqlab.results.schema); `mode` ("max"/"min") is needed only for a metric that has neither."""
        trials = self.trials
        if metric is None:
            objectives = self.spec.get("objectives") or [{"metric": HEADLINE_METRIC}]
            metric = objectives[0]["metric"]
        column = resolve_column(trials, metric, "metric", metric_candidates(trials))
        mode = mode or metric_info(column, self._modes()).mode
        if mode not in ("max", "min"):
            raise ValueError(f"metric {metric!r} has no direction in the metric catalogue or the study's "
                             "objectives: pass mode='max' or mode='min'")
        done = trials[trials["status"] == Status.COMPLETED].dropna(subset=[column])
        if done.empty:
            found = ", ".join(f"{n} {s}" for s, n in trials["status"].value_counts().items()) or "none"
            raise ValueError(f"no completed trial has {column} (trials: {found})")
        ranked = done.sort_values(column, ascending=mode == "min", kind="stable")
        return ranked.iloc[0]

    def table(self, by: Union[None, str, Sequence[str]] = None, metrics: Union[None, str, Sequence[str]] = None,
              baseline: Union[None, str, dict] = None, ratio_of: Optional[str] = None) -> pd.DataFrame:
        """The comparison `deqlab export --format csv` prints, as a DataFrame: the final epoch of completed
        trials grouped `by` (default init, solver), mean and std of each metric (default test_acc, nfe_fwd,
        epoch_time_s) in display units (accuracy in %), `n`; with `baseline` ("init=zeros" or
        {"init": "zeros"}) a ratio column and its bootstrap interval. Warnings `deqlab export` prints on
        stderr (rows pooling hardware or studies) are Python warnings here."""
        table, notes = export_table(self.epochs, [self.spec], _names(by), _names(metrics), baseline=baseline,
                                    ratio_metric=ratio_of)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        return csv_frame(table)

    def figure(self, x: str = DEFAULT_X[0], y: str = DEFAULT_Y[0], color: Optional[str] = "init",
               facet: Optional[str] = None, log_x: bool = False):
        """The dashboard's Compare scatter (a plotly Figure): one point per trial, coloured by a
        hyperparameter (default `init`, which finds param.deq.init; no colour when the trials have none,
        or with None), with the Pareto front of x and y in the directions of the study's objectives or the
        catalogue."""
        trials = self.trials
        if trials.empty:
            raise ValueError(f"study {self.name} has no trials yet")
        x, y = (resolve_column(trials, m, "metric", metric_candidates(trials)) for m in (x, y))
        if color == "init" and not any(c.endswith(".init") for c in hyperparameters(trials)):
            color = None  # the default on a model without a DEQ layer: no colour rather than an error
        color, facet = (resolve_column(trials, c, "column") if c else None for c in (color, facet))
        cmap = figures.ColourMap(trials, ["study", *hyperparameters(trials)])  # the dashboard's colours
        hover = ["study", "trial_id", "status", "epochs",
                 *[p for p in varying_params(trials) if p not in (color, facet)][:6]]  # as the dashboard's
        return figures.compare_scatter(trials, x, y, color, cmap, x_mode=mode_of(x, self._modes()),
                                       y_mode=mode_of(y, self._modes()), facet=facet, hover=hover, log_x=log_x)

    def model(self, trial_id: Optional[str] = None, *, best: Optional[str] = None, device="cpu"):
        """(a trained model of this study in eval mode, its TrainConfig): `deqlab.load_model` on this
        directory: trial `trial_id`'s newest whole checkpoint, or the best completed trial by metric `best`
        (`best="test_acc"`), or the study's only trial. Imports torch when called; reading does not."""
        from .run.saved import load_model

        return load_model(self.path, trial_id, best=best, device=device)


def open_study(study_dir) -> StudyResult:
    """A finished or running study directory (local path or URI), read-only."""
    return StudyResult(study_dir)


def _merged(base: dict, override: dict, path: str = "") -> dict:
    """`override` merged into `base` key by key (nested mappings too); a `space` entry is replaced whole
    (one entry is one distribution: `{grid: [...]}` does not mix with `{choice: [...]}`)."""
    out = dict(base)
    for key, value in override.items():
        inner = f"{path}.{key}" if path else key
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path != "space":
            out[key] = _merged(out[key], value, inner)
        else:
            out[key] = value
    return out


def run_study(path_or_dict, storage: str = "results", name: Optional[str] = None, *, progress: bool = True,
              address: Optional[str] = None, num_cpus: Optional[int] = None, **overrides) -> StudyResult:
    """Run a study as `deqlab run` does (the same driver; progress lines and the closing table printed
    unless `progress=False`) and return it opened. `path_or_dict`: a study YAML file or its mapping;
    `name` runs it under another name; `overrides` are merged into the study's sections before it is
    validated, e.g. `search={"num_samples": 2}, base={"epochs": 1}`. A study that cannot run raises
    `deqlab.study.StudyError` (a ValueError) with the one line `deqlab run` prints."""
    from .study.driver import run_study as drive
    from .study.spec import StudyError, parse_study
    from .study.summary import closing_report
    from .study.yaml_io import read_yaml

    if isinstance(path_or_dict, dict):
        raw, source = path_or_dict, "<study>"
    else:
        source = os.fspath(path_or_dict)
        raw = read_yaml(source)
        if raw is None:
            raise StudyError(f"{source}: the file is empty")
    if isinstance(raw, dict):
        raw = _merged(raw, {**overrides, **({"name": name} if name else {})})
    spec = parse_study(raw, source)
    say = (lambda line: print(line, flush=True)) if progress else (lambda _line: None)
    say(f"study {spec.name}: results in {storage}/{spec.name}")
    outcome = drive(spec, storage, say=say, address=address, num_cpus=num_cpus)
    if progress:
        print(closing_report(outcome)[0])
    return StudyResult(outcome.path)


__all__ = ["run_study", "open_study", "StudyResult"]
