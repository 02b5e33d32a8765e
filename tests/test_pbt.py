"""Population Based Training through Ray Tune's PopulationBasedTraining: the study file's `scheduler: {name:
pbt, ...}` validated before Ray starts, and a 4-trial digits population whose rows show its exploits."""

import os
import re

import pytest
from study_factory import TINY

from deqlab.results import load
from deqlab.study import parse_study
from deqlab.study.spec import StudyError

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
EPOCHS = 4


def _raw(**changes):
    raw = {"name": "pbt", "base": {**TINY, "epochs": EPOCHS, "device": "cpu"},
           "space": {"optim.lr": {"choice": [1e-5, 3e-2]}, "seed": {"int": [0, 1000]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}],
           "search": {"algorithm": "random", "num_samples": 4, "seed": 1, "max_concurrent_trials": 2},
           "checkpoint": {"every": 1, "keep": 3},
           "scheduler": {"name": "pbt", "perturbation_interval": 1,
                         "mutations": {"optim.lr": {"loguniform": [1e-4, 1e-1]}, "deq.tol": {"choice": [1e-3, 1e-2]}}}}
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            raw[section] = {**raw[section], field: value}
        else:
            raw[section] = value
    return raw


@pytest.mark.parametrize("changes, says", [
    ({"search__algorithm": "tpe"}, "scheduler.name: pbt with search.algorithm tpe: Ray Tune's PopulationBasedTraining "
                                   "takes no search algorithm"),
    ({"scheduler__mutations": {"optim.momentum": {"uniform": [0, 1]}}}, "scheduler.mutations.optim.momentum: neither"),
    ({"scheduler__mutations": {"optim.weight_decay": {"uniform": [0, 0.1]}}},
     "scheduler.mutations.optim.weight_decay: neither the space nor the base sets optim.weight_decay"),
    ({"scheduler__mutations": {"deq.tol": {"choice": [-1.0]}}}, "scheduler.mutations.deq.tol: value -1.0 is not valid"),
    ({"scheduler__mutations": {}}, "scheduler.mutations: empty"),
    ({"scheduler__mutations": {"deq.tol": {"fixed": 1e-3}}}, "scheduler.mutations.deq.tol: PBT mutates with"),
    ({"checkpoint": {"every": 0}}, "checkpoint.every 0: PBT clones a trial from its checkpoint"),
    ({"checkpoint": {"every": 2}}, "scheduler.perturbation_interval: 1 with checkpoint.every 2"),
    ({"checkpoint": {"every": 1, "keep": 2}}, "checkpoint.keep: 2 with scheduler.name pbt"),
    ({"scheduler__perturbation_interval": EPOCHS}, "would never perturb"),
    ({"scheduler": {"name": "asha", "perturbation_interval": 2}},
     "scheduler.perturbation_interval: set, but scheduler.name is asha, which does not use it"),
    ({"scheduler": {"mutations": {"optim.lr": {"choice": [1e-3]}}}},
     "scheduler.mutations: set, but scheduler.name is none: no scheduler stops trials, so it would be ignored; "
     "set scheduler.name: pbt"),
])
def test_pbt_study_is_validated_before_ray(changes, says):
    with pytest.raises(StudyError, match=re.escape(says)):
        parse_study(_raw(**changes), "pbt.yaml")


def test_pbt_study_parses_and_builds_tunes_scheduler():
    from ray.tune.schedulers import PopulationBasedTraining

    from deqlab.study.tuner import _param_space, _pbt_mutations

    spec = parse_study(_raw(), "pbt.yaml")
    mutations = _pbt_mutations(spec)
    assert mutations["deq.tol"] == [1e-3, 1e-2] and mutations["optim.lr"].lower == 1e-4
    space = _param_space(spec)
    assert space["deq.tol"] == 1e-3  # the base's starting value of a mutated setting the space does not draw
    assert sorted(space["optim.lr"].categories) == [1e-5, 3e-2]
    PopulationBasedTraining(metric="test_acc", mode="max", hyperparam_mutations=mutations)  # Ray accepts it


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_pbt_population_exploits_and_its_rows_show_it(ray_local, tmp_path):
    from deqlab.study.driver import run_study
    from deqlab.study.summary import final_rows

    spec = parse_study(_raw(), "pbt.yaml")
    outcome = run_study(spec, str(tmp_path), say=lambda line: None)
    rows = load(outcome.path, traces=False).trials.sort_values(["trial_id", "epoch"])
    final = final_rows(rows)
    assert len(final) == 4 and (final.status == "completed").all()
    assert not rows.duplicated(["trial_id", "epoch"]).any()
    assert (rows.groupby("trial_id").epoch.apply(list).map(tuple) == tuple(range(EPOCHS))).all()  # each epoch once
    cloned = rows[rows.pbt_source.notna()]
    assert len(cloned), "no exploit happened"
    for _, row in cloned.iterrows():
        assert row.pbt_source in set(final.trial_id) and row.pbt_source != row.trial_id
        assert row.epoch > row.pbt_source_epoch  # trained on from the source's checkpoint
        # what changed is what the row's params say: the mutated settings against the source's
        for change in filter(None, row.pbt_changes.split("; ")):
            key, _, values = change.partition(": ")
            assert key in ("optim.lr", "deq.tol")
            assert float(values.split(" -> ")[1]) == row[f"param.{key}"]
    # a clone's rows before its first exploit are its own, with the value the population drew
    first = cloned.groupby("trial_id").epoch.min()
    for trial_id, epoch in first.items():
        own = rows[(rows.trial_id == trial_id) & (rows.epoch < epoch)]
        assert len(own) >= 1 and own.pbt_source.isna().all()
        assert set(own["param.optim.lr"]) <= {1e-5, 3e-2}
