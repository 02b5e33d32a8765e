"""What a finished study prints, and what `deqlab ls` shows, read back from the Parquet files.

Reading the files (not Tune's in-memory results) means the table is the one
the dashboard and `deqlab export` will show, and works on a resumed study.
"""

from __future__ import annotations

import shlex
import warnings
from collections import Counter

import pandas as pd
import pyarrow.fs as pafs

from ..report.tables import aggregate, final_epochs, render
from ..results import (STATUSES, STUDY_FILE, Status, StudyStore, column_name, load, metric_info, printable,
                       value_name)
from ..results.store import join
from ..results import checkpoints
from .space import walk
from .spec import StudySpec

GROUP_BY = ("init", "solver")


def final_rows(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last epoch, whatever its status."""
    return final_epochs(trials, statuses=None)


def status_counts(path: str) -> dict:
    final = final_rows(load(path, traces=False).trials)
    counts = Counter(final["status"]) if len(final) else Counter()
    return {s: counts[s] for s in STATUSES if counts[s]}


def closing_report(outcome) -> tuple[str, dict]:
    """What `deqlab run` and `deqlab.run_study` print when a study ends (trials by status, untried choices,
    the comparison, the Pareto front, where the results are), and the status counts."""
    counts = status_counts(outcome.path)
    spec = outcome.spec
    lines = [f"\n{spec.name}: {sum(counts.values())} trials in {outcome.seconds:.0f} s ("
             + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"]
    lines += [f"warning: {line}; for a head-to-head comparison use `search: {{algorithm: grid}}`"
              for line in untried_choices(outcome.path, spec)]
    lines.append(comparison_table(outcome.path, spec))
    if len(spec.objectives) > 1:
        lines.append(f"\nPareto front ({', '.join(f'{o.mode} {o.metric}' for o in spec.objectives)}):")
        lines.append(pareto_table(outcome.path, spec))
    where = shlex.quote(str(outcome.path))
    lines.append(f"\nresults: {outcome.path}\ndashboard: deqlab dashboard {where}\n"
                 f"export: deqlab export {where} --format latex -o table.tex")
    return "\n".join(lines), counts


def comparison_table(path: str, spec: StudySpec) -> str:
    """Completed trials by init mode x solver: mean +- std (n) of each objective, best in bold (Markdown:
    the same table `deqlab export` and the dashboard give)."""
    trials = load(path, traces=False).trials
    if trials.empty or not (final_rows(trials)["status"] == Status.COMPLETED).any():
        return "(no completed trials to compare)"
    try:
        table = aggregate(trials, by=list(GROUP_BY), metrics=spec.metrics,
                          modes={o.metric: o.mode for o in spec.objectives})
    except ValueError as exc:  # nothing completed: say so instead of failing the run's summary
        return f"(no comparison: {exc})"
    return render(table, "markdown")


def untried_choices(path: str, spec: StudySpec) -> list[str]:
    """`choice`/`grid` values of the space no trial ran (TPE may never sample one): one line per parameter."""
    final = final_rows(load(path, traces=False).trials)
    lines = []
    for p in walk(spec.params):
        if p.kind not in ("choice", "grid") or len(p.values) < 2:
            continue
        rows = final
        if p.condition:  # a conditional parameter counts only trials on its branch
            parent, _, value = p.condition.partition("=")
            column = f"param.{parent}"
            rows = rows[rows[column].astype(str) == value] if column in rows else rows.iloc[0:0]
        seen = set(rows[f"param.{p.path}"].astype(str)) if f"param.{p.path}" in rows else set()
        missing = [str(v) for v in p.values if str(v) not in seen]
        if missing:
            lines.append(f"{p.name}: never tried {', '.join(missing)} (of {len(p.values)} choices)")
    return lines


def list_studies(storage: str) -> str:
    """Every study folder under the root that has trials: trials by status and the best value of its first
    objective."""
    root = StudyStore(storage)
    info = root.fs.get_file_info(root.base)
    if info.type == pafs.FileType.NotFound:
        raise ValueError(f"no results root at {storage}")
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"{storage} is not a directory of studies")
    lines = []
    for entry in sorted(root.fs.get_file_info(pafs.FileSelector(root.base)), key=lambda i: i.base_name):
        if entry.type != pafs.FileType.Directory or entry.base_name.startswith("."):
            continue
        try:
            lines.extend(_study_lines(StudyStore(join(root.path, entry.base_name)), entry.base_name))
        except Exception as exc:  # one study's files, whatever they hold, never hide the others
            warnings.warn(f"skipping the study {printable(entry.base_name)}: {type(exc).__name__}: {exc}")
    return "\n".join(lines) if lines else f"no studies in {storage}"


def _study_lines(study: StudyStore, name: str) -> list[str]:
    """`name: N trials (counts, checkpoints size) best ...`, then why its first failed trials failed; [] for a
    folder without trials."""
    if study.fs.get_file_info(study.at("trials")).type != pafs.FileType.Directory:
        return []
    final = final_rows(load(study.path, traces=False).trials)
    counts = Counter(final["status"]) if len(final) else Counter()
    objective = _first_objective(study)
    best = ""
    if objective and len(final) and objective[0] in final:
        values = pd.to_numeric(final.loc[final["status"] == Status.COMPLETED, objective[0]], errors="coerce").dropna()
        if len(values):
            value = values.max() if objective[1] == "max" else values.min()
            best = f"best {printable(objective[0])} {value:.4g}"
    status = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]) or "no trials"
    size = checkpoints.size_on_disk(study)
    saved = f", checkpoints {_size(size)}" if size else ""
    return [f"{printable(name)}: {len(final)} trials ({status}{saved}) {best}".rstrip(), *_failure_lines(final)]


def _size(n: int) -> str:
    """Bytes as `deqlab ls` shows them: 1.5 MB, 830 kB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def _failure_lines(final: pd.DataFrame, shown: int = 5) -> list[str]:
    """`  <trial> failed: <Type: message>` for the first few failed trials, so `ls` says why."""
    if not len(final) or "error" not in final:
        return []
    failed = final[final["status"] == Status.FAILED].sort_values("trial_id")
    lines = [f"  {printable(r.trial_id)} failed: {printable(r.error)}" for r in failed.head(shown).itertuples()]
    if len(failed) > shown:
        lines.append(f"  ... {len(failed) - shown} more failed")
    return lines


def _first_objective(study: StudyStore):
    try:
        o = study.read_yaml(STUDY_FILE)["objectives"][0]
        return o["metric"], o["mode"]
    except Exception:  # `deqlab train` studies have no objectives; a damaged file must not stop the listing
        return None


def pareto_front(final: pd.DataFrame, objectives) -> pd.DataFrame:
    """Completed trials no other completed trial dominates (at least as good in every objective, better in one)."""
    done = final[final["status"] == Status.COMPLETED] if len(final) else final
    if done.empty:
        return done
    # all objectives as "larger is better"
    values = pd.concat([pd.to_numeric(done[o.metric], errors="coerce") * (1 if o.mode == "max" else -1)
                        for o in objectives], axis=1).to_numpy()
    keep = []
    for i, v in enumerate(values):
        dominated = ((values >= v).all(axis=1) & (values > v).any(axis=1)).any()
        keep.append(not dominated)
    return done[keep]


def pareto_table(path: str, spec: StudySpec) -> str:
    front = pareto_front(final_rows(load(path).trials), spec.objectives)
    if front.empty:
        return "(no completed trials)"
    groups = [f"param.deq.{c}" for c in GROUP_BY if f"param.deq.{c}" in front]
    ordered = front.sort_values(spec.metrics[0], ascending=spec.modes[0] == "min")
    # the comparison table's names and units: SkipDEQ, Broyden, Test acc. (%)
    shown = pd.DataFrame({"trial": ordered["trial_id"]})
    for c in groups:
        shown[column_name(c)] = [value_name(c, v) for v in ordered[c]]
    for m in spec.metrics:
        info = metric_info(m)
        shown[info.title] = ordered[m].to_numpy() * info.scale
    return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
