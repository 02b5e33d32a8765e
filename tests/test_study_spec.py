"""Study files: every kind of mistake is caught before Ray starts, with the key path and the valid choices."""

import copy
import sys

import optuna
import pytest
import yaml

from deqlab.cli import main
from deqlab.study import StudyError, load_study, parse_study
from deqlab.study.space import apply, grid_points, parse_space, suggest, to_paths

GOOD = {
    "name": "s1",
    "base": {"epochs": 2, "data": {"name": "digits"}, "model": {"name": "mlp", "options": {"width": 16}}},
    "space": {
        "deq.init": {"choice": ["zeros", "skip", "skipreg"]},
        "deq.solver": {"choice": {"anderson": {"deq.solver_options.m": {"int": [2, 6]}},
                                  "broyden": {"deq.solver_options.memory": {"int": [4, 16], "step": 4}},
                                  "newton_krylov": {"deq.solver_options.restart": 5},
                                  "continuous": {"deq.solver_options.method": {"choice": ["dopri5", "bosh3"]}},
                                  "fixed_point": {}}},
        "deq.tol": {"loguniform": [1e-5, 1e-2]},
        "optim.lr": {"uniform": [1e-4, 3e-3]},
    },
    "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}],
}


def mutate(path, value=None, delete=False):
    raw = copy.deepcopy(GOOD)
    node = raw
    *parents, leaf = path
    for p in parents:
        node = node[p]
    if delete:
        del node[leaf]
    else:
        node[leaf] = value
    return raw


def changed(**sections):
    """GOOD with whole top-level sections replaced (several at once, unlike `mutate`)."""
    return {**copy.deepcopy(GOOD), **sections}


GRID_SPACE = {"deq.init": {"grid": ["zeros", "skip"]}, "seed": {"grid": [0, 1]}}


def test_good_study_parses_and_every_ready_study_validates():
    spec = parse_study(GOOD)
    assert spec.metrics == ["test_acc", "nfe_fwd"] and spec.modes == ["max", "min"]
    import pathlib

    for path in sorted(pathlib.Path("studies").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "objectives" in raw:  # study files; train_digits.yaml is a single-run config
            load_study(path)


@pytest.mark.parametrize("raw, expected", [
    (mutate(("colour",), "red"), "colour: unknown key; valid: name, description, base, space, objectives"),
    (mutate(("base", "epoch"), 3), "base: epoch: unknown key; valid: seed, epochs, pretrain_epochs"),
    (mutate(("base", "epochs"), "many"), "base: epochs: Input should be a valid integer"),
    (mutate(("base", "model", "name"), "resnet"), "unknown model 'resnet'; valid: mlp"),
    (mutate(("space", "deq.tol"), {"loguniform": [1e-2, 1e-5]}), "space.deq.tol: loguniform needs low < high"),
    (mutate(("space", "deq.tol"), {"loguniform": [0, 1e-2]}), "space.deq.tol: a log-scaled range needs low > 0"),
    (mutate(("space", "deq.tol"), {"uniform": [-1, 1]}), "space.deq.tol: value -1 is not valid: deq.tol"),
    (mutate(("space", "deq.tol"), {"between": [1, 2]}), "space.deq.tol: expected exactly one of choice, grid"),
    (mutate(("space", "deq.init"), {"choice": ["zeros", "warm"]}),
     "space.deq.init: value 'warm' is not valid: deq.init: Input should be 'zeros', 'skip' or 'skipreg'"),
    (mutate(("space", "deq.solver", "choice", "sor"), {}), "unknown solver 'sor'"),
    (mutate(("space", "deq.solver", "choice", "anderson"), {"deq.solver_options.memory": 4}),
     "space.deq.solver.choice.anderson.deq.solver_options.memory: value 4 is not valid"),
    (mutate(("space", "deq.tolerance"), {"uniform": [0.1, 0.2]}),
     "space.deq.tolerance: unknown setting 'tolerance' in deq; valid: init, solver"),
    (mutate(("space", "deq"), {"choice": [1]}), "space.deq: 'deq' is a section"),
    (mutate(("space",), {}), "space: empty: nothing to search"),
    (mutate(("objectives",), [{"metric": "accuracy", "mode": "max"}]), "unknown metric 'accuracy'; valid: train_loss"),
    (mutate(("objectives",), [{"metric": "test_acc", "mode": "up"}]), "objectives.0.mode: Input should be 'max' or 'min'"),
    (mutate(("objectives",), []), "objectives: List should have at least 1 item"),
    (mutate(("search",), {"algorithm": "cmaes"}), "'cmaes' optimises one objective"),
    (mutate(("search",), {"algorithm": "bayes"}), "search.algorithm: Input should be 'tpe', 'gp', 'cmaes'"),
    (mutate(("search",), {"algorithm": "grid"}), "deq.solver_options.m|deq.solver=anderson: an int range without step has no finite grid"),
    (mutate(("scheduler",), {"name": "asha", "grace_period": 2}), "scheduler.grace_period: 2 >= the 2 epochs"),
    (mutate(("trainer",), {"num_workers": -1}), "trainer.num_workers: Input should be greater than or equal to 0"),
    # settings that could not take effect given the others: errors, not silently ignored
    (mutate(("trainer",), {"gpus_per_worker": 1}), "trainer.gpus_per_worker: 1 set, but trainer.use_gpu is false"),
    (mutate(("scheduler",), {"grace_period": 2}), "scheduler.grace_period: set, but scheduler.name is none"),
    (mutate(("scheduler",), {"name": "none", "reduction_factor": 3}),
     "scheduler.reduction_factor: set, but scheduler.name is none"),
    (changed(space=GRID_SPACE, search={"algorithm": "grid", "seed": 0}),
     "search.seed: the grid algorithm draws nothing at random, so a seed would be ignored"),
    (changed(space={**GOOD["space"], "epochs": {"int": [2, 4]}}, scheduler={"name": "asha"}),
     "space.epochs: searched with scheduler.name asha, whose max_t is the 2 epochs of base"),
    (changed(space={"deq.solver": {"choice": {"anderson": {"pretrain_epochs": 1}, "broyden": {}}}},
             scheduler={"name": "asha"}),
     "space.deq.solver.choice.anderson.pretrain_epochs: searched with scheduler.name asha"),
    (mutate(("name",), "../escape"), "invalid study name '../escape'"),
])
def test_each_kind_of_mistake_is_named(raw, expected):
    with pytest.raises(StudyError) as err:
        parse_study(raw, "my.yaml")
    message = str(err.value)
    assert message.startswith("my.yaml: ")
    assert expected in message, message


def test_settings_that_take_effect_are_accepted_and_dumps_parse_again(tmp_path):
    # the live counterparts of the mistakes above
    parse_study(mutate(("trainer",), {"gpus_per_worker": 0}))  # no GPUs, said twice: consistent
    parse_study(mutate(("trainer",), {"use_gpu": True, "gpus_per_worker": 0.5}))
    parse_study(mutate(("scheduler",), {"name": "asha", "grace_period": 1, "reduction_factor": 3}))
    parse_study(changed(space=GRID_SPACE, search={"algorithm": "grid"}))
    parse_study(changed(space={**GOOD["space"], "epochs": {"int": [2, 4]}}))  # no ASHA: each trial runs its own
    # a dump (study.yaml, the spec each trial parses, `deqlab run --name`) leaves the ignored defaults out,
    # so it validates again to the same spec
    import pathlib

    for raw in [GOOD, changed(space=GRID_SPACE, search={"algorithm": "grid"}),
                *(yaml.safe_load(p.read_text()) for p in sorted(pathlib.Path("studies").glob("*.yaml")))]:
        if "objectives" not in raw:
            continue
        spec = parse_study(raw)
        dumped = spec.model_dump(mode="json")
        assert parse_study(dumped) == spec and parse_study(yaml.safe_load(spec.dump())) == spec
        if spec.search.algorithm == "grid":
            assert "seed" not in dumped["search"]
        if not spec.trainer.use_gpu:
            assert "gpus_per_worker" not in dumped["trainer"]
        if spec.scheduler.name == "none":
            assert dumped["scheduler"] == {"name": "none"}


def test_a_study_saved_with_every_default_still_resumes(tmp_path):
    """study.yaml files written before dumps left ignored settings out record them all: resume drops them."""
    from deqlab.study.driver import load_saved_spec, prepare

    spec = parse_study(changed(space=GRID_SPACE, search={"algorithm": "grid"}))
    prepare(spec, str(tmp_path))
    old = spec.model_dump(mode="json")
    old["search"]["seed"] = 0
    old["scheduler"].update(grace_period=1, reduction_factor=2.0)
    old["trainer"]["gpus_per_worker"] = 1.0
    (tmp_path / "s1" / "study.yaml").write_text(yaml.safe_dump(old))
    with pytest.raises(StudyError, match="trainer.gpus_per_worker: 1 set"):  # refused as a new study
        parse_study(old)
    assert load_saved_spec(str(tmp_path), "s1") == spec


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(StudyError, match=r"bad.yaml: not valid YAML"):
        load_study(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(StudyError, match="the file is empty"):
        load_study(empty)
    with pytest.raises(StudyError, match="no such study file"):
        load_study(tmp_path / "missing.yaml")
    # a YAML tag that would build a Python object is refused by the safe loader
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(StudyError, match="not valid YAML"):
        load_study(evil)


def test_validate_cli_fails_before_ray_starts(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(("space", "deq.tol"), {"loguniform": [1e-2, 1e-5]})))
    assert main(["validate", str(bad)]) == 2
    assert "loguniform needs low < high" in capsys.readouterr().err
    assert main(["run", str(bad), "--storage", str(tmp_path / "res")]) == 2
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    assert not (tmp_path / "res").exists()
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(GOOD))
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "ok" in out and "deq.solver_options.m|deq.solver=anderson" in out


# --------------------------------------------------------------------------- the space


def test_grid_expands_conditional_branches_only_under_their_value():
    params = parse_space({
        "deq.init": {"grid": ["zeros", "skip"]},
        "deq.solver": {"choice": {"anderson": {"deq.solver_options.m": {"grid": [2, 5]}}, "broyden": {}}},
        "seed": {"int": [0, 4], "step": 2},
    })
    points = grid_points(params)
    assert len(points) == 2 * (2 + 1) * 3
    assert all(("deq.solver_options.m" in p) == (p["deq.solver"] == "anderson") for p in points)
    assert len({tuple(sorted(p.items())) for p in points}) == len(points)


def test_define_by_run_draws_only_active_params_within_bounds():
    params = parse_study(GOOD).params
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(60):
        trial = study.ask()
        drawn = suggest(trial, params)
        study.tell(trial, 0.0)
        seen.add(drawn["deq.solver"])
        assert 1e-5 <= drawn["deq.tol"] <= 1e-2 and 1e-4 <= drawn["optim.lr"] <= 3e-3
        assert ("deq.solver_options.m" in drawn) == (drawn["deq.solver"] == "anderson")
        if drawn["deq.solver"] == "broyden":
            assert drawn["deq.solver_options.memory"] in (4, 8, 12, 16)
        if drawn["deq.solver"] == "newton_krylov":
            assert drawn["deq.solver_options.restart"] == 5  # fixed values ride along
        # Optuna's names carry the condition; the config paths do not
        assert set(to_paths(trial.params)) <= set(drawn)
        parse_study(GOOD).train_config(drawn)  # every draw is a valid training config
    assert seen == {"anderson", "broyden", "newton_krylov", "continuous", "fixed_point"}


def test_apply_sets_nested_paths_without_touching_the_base():
    base = {"deq": {"tol": 1e-3}, "model": {"name": "mlp"}}
    out = apply(base, {"deq.solver_options.m": 3, "model.options.width": 8})
    assert out == {"deq": {"tol": 1e-3, "solver_options": {"m": 3}}, "model": {"name": "mlp", "options": {"width": 8}}}
    assert base == {"deq": {"tol": 1e-3}, "model": {"name": "mlp"}}
