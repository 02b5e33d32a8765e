"""`deqlab validate` refuses what would fail at run time: clashing combinations, seeds numpy cannot take,
resource requests nothing can hold, misspelt keys (with the nearest valid one). No Ray is started."""

import sys

import pytest
import yaml

from deqlab.cli import main
from deqlab.study import parse_study
from deqlab.study.tuner import check_fits
from deqlab.study.spec import StudyError

HEAD = {"name": "v", "objectives": [{"metric": "test_acc", "mode": "max"}]}


def refused(raw, capsys, tmp_path) -> str:
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({**HEAD, **raw}))
    code = main(["validate", str(file)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    return err


@pytest.mark.parametrize("space, named", [
    # Anderson's option under a space that can only draw Broyden
    ({"deq.solver": {"choice": ["broyden"]}, "deq.solver_options.m": {"int": [2, 6]}}, "unknown option(s) 'm'"),
    # valid for one solver the space can draw, not for the other
    ({"deq.solver": {"choice": ["broyden", "fixed_point"]}, "deq.solver_options.memory": {"choice": [5, 10]}},
     "unknown option(s) 'memory'"),
    # inside a branch: fine for anderson, but the fixed top-level option clashes with broyden's branch
    ({"deq.solver": {"choice": {"anderson": {}, "broyden": {"deq.solver_options.memory": 5}}},
      "deq.solver_options.m": 3}, "unknown option(s)"),
])
def test_every_combination_that_can_be_sampled_must_be_valid(space, named, capsys, tmp_path):
    """Each value alone is valid against the base config (solver anderson) in the first and third case."""
    err = refused({"space": space}, capsys, tmp_path)
    assert "is not valid" in err and named in err, err
    assert "space" in err and "deq.solver" in err


def test_combinations_that_are_all_valid_pass(capsys, tmp_path):
    file = tmp_path / "ok.yaml"
    file.write_text(yaml.safe_dump({**HEAD, "space": {
        "deq.solver": {"choice": {"anderson": {"deq.solver_options.m": {"int": [2, 6]}}, "broyden": {}}},
        "deq.init": {"choice": ["zeros", "skip", "skipreg"]}, "deq.tol": {"loguniform": [1e-5, 1e-2]}}}))
    assert main(["validate", str(file)]) == 0


@pytest.mark.parametrize("space, bound", [({"seed": {"int": [-3, 3]}}, "greater than or equal to 0"),
                                          ({"seed": {"int": [0, 1e23]}}, "less than or equal to 4294967295"),
                                          ({"seed": {"grid": [0, 2**32]}}, "less than or equal to 4294967295")])
def test_seed_ranges_must_fit_numpy(space, bound, capsys, tmp_path):
    err = refused({"space": space}, capsys, tmp_path)
    assert "space.seed" in err and bound in err


def test_search_seed_must_fit_numpy(capsys, tmp_path):
    err = refused({"space": {"deq.tol": {"loguniform": [1e-4, 1e-2]}}, "search": {"seed": -1}}, capsys, tmp_path)
    assert "search.seed" in err


@pytest.mark.parametrize("trainer, key", [({"cpus_per_worker": 1000}, "trainer.cpus_per_worker"),
                                          ({"num_workers": 100000}, "trainer.num_workers"),
                                          ({"use_gpu": True, "gpus_per_worker": 64}, "trainer.gpus_per_worker")])
def test_absurd_resource_requests_are_refused(trainer, key, capsys, tmp_path):
    err = refused({"space": {"seed": {"grid": [0]}}, "trainer": trainer}, capsys, tmp_path)
    assert key in err and "less than or equal to" in err


@pytest.mark.parametrize("raw, where, nearest", [
    ({"space": {"seed": {"grid": [0]}}, "schedular": {"name": "asha"}}, "schedular", "scheduler"),
    ({"space": {"seed": {"grid": [0]}}, "base": {"optim": {"grad_clipp": 1.0}}}, "optim.grad_clipp", "grad_clip"),
    ({"space": {"seed": {"grid": [0]}}, "trainer": {"num_worker": 1}}, "trainer.num_worker", "num_workers"),
])
def test_misspelt_keys_name_the_valid_ones_and_the_nearest(raw, where, nearest, capsys, tmp_path):
    err = refused(raw, capsys, tmp_path)
    assert f"{where}: unknown key; valid: " in err and f"did you mean {nearest!r}?" in err, err


def test_a_trial_the_local_ray_cannot_hold_is_refused_at_start(monkeypatch):
    import ray

    spec = parse_study({**HEAD, "space": {"seed": {"grid": [0]}}, "trainer": {"cpus_per_worker": 8}}, "v")
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    with pytest.raises(StudyError, match=r"one trial needs more than the 2 CPU of the local Ray"):
        check_fits(spec, local=True, say=print)
    lines = []
    check_fits(spec, local=False, say=lines.append)  # a cluster may still scale up: a warning
    assert len(lines) == 1 and lines[0].startswith("warning: trainer: one trial needs more than the 2 CPU of the cluster")
    small = parse_study({**HEAD, "space": {"seed": {"grid": [0]}}, "trainer": {"num_workers": 2, "cpus_per_worker": 0.9}},
                        "v")
    check_fits(small, local=True, say=pytest.fail)  # 2 x 0.9 + 0.1 fits in 2 CPUs


# --------------------------------------------------------------------------- oversized input, `deqlab ls` output


def test_deep_nesting_and_huge_study_files_are_one_line_errors(capsys, tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\nspace: " + "[" * 600 + "]" * 600 + "\n")  # 1.2 KB that once gave a RecursionError
    assert main(["validate", str(deep)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {deep}: nested more than 32 levels deep; a study needs a few\n"
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 110_000)
    assert main(["validate", str(big)]) == 2
    assert capsys.readouterr().err == f"error: {big}: 1100000 bytes; a study file is at most 1048576\n"


def test_ls_prints_warnings_as_one_line_each_and_survives_a_closed_pipe(tmp_path):
    import subprocess

    from study_factory import comparison_study

    for name in ("a", "b"):
        (comparison_study(tmp_path, name) / "trials" / "torn.parquet").write_bytes(b"PAR1 torn")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-m", "deqlab", "ls", str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("a: 10 trials")
    lines = out.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("warning: skipping unreadable results file ") for line in lines)
    assert "UserWarning" not in out.stderr
    proc = subprocess.Popen([sys.executable, "-m", "deqlab", "ls", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    proc.stdout.close()  # like `| head -0`: the reader is gone before deqlab writes
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "BrokenPipeError" not in err and "Traceback" not in err, err


BASE = {"epochs": 1, "data": {"name": "digits"}, "model": {"name": "mlp"}}


@pytest.mark.parametrize("space, search, said", [
    # a 1 kB file: five lists of 60 values are 60**5 = 777,600,000 points (built: 1.3 GB for 3.2 million)
    ({p: {"grid": [v * k for k in range(1, 61)]} for p, v in
      (("seed", 1), ("optim.lr", 1e-4), ("model.options.width", 8), ("deq.max_iter", 5), ("deq.tol", 1e-5))},
     {"algorithm": "grid"}, "the grid has more than 10000 points (limit 10000 trials)"),
    ({"seed": {"int": [0, 10**15], "step": 1}}, {"algorithm": "grid"}, "more than 10000 points"),  # one range
    ({"seed": {"grid": list(range(100))}}, {"algorithm": "grid", "num_samples": 101},
     "the grid has 100 points x num_samples 101 (limit 10000 trials)"),  # repeats are trials too
    ({"seed": {"choice": list(range(3000))}}, {"algorithm": "tpe"}, "lists 3000 values in all (limit 2048)"),
])
def test_a_space_is_counted_before_anything_is_built(space, search, said, capsys, tmp_path):
    import time

    t0 = time.perf_counter()
    err = refused({"base": BASE, "space": space, "search": search}, capsys, tmp_path)
    elapsed = time.perf_counter() - t0
    assert said in err, err
    assert elapsed < 1.0, elapsed  # was 4 s and 1.3 GB for 3.2 million points, a MemoryError for 60**5


def test_a_grid_at_the_limit_still_runs(tmp_path):
    spec = parse_study({**HEAD, "base": BASE, "space": {"seed": {"grid": list(range(100))},
                                                         "deq.tol": {"grid": [1e-3, 1e-4]}},
                        "search": {"algorithm": "grid", "num_samples": 50}}, "s.yaml")
    assert len(spec.grid()) * spec.search.samples == 10_000  # exactly the limit: allowed


@pytest.mark.parametrize("name", ["x\n", "x\r\n", "ok\x1b[31m", "../up", "a" * 202])
def test_a_name_is_matched_whole(name, capsys, tmp_path):
    """`$` matched before a final newline: `name: "x\\n"` passed and became a folder name with a newline."""
    err = refused({"base": BASE, "space": {"seed": {"grid": [0]}}, "name": name}, capsys, tmp_path)
    assert "invalid study name" in err, err


@pytest.mark.parametrize("base, space, named", [
    ({"deq": {"backward": "shine"}}, {"deq.solver": {"choice": ["anderson", "fixed_point"]}},
     "backward 'shine' reuses the forward solver's inverse-Jacobian estimate, which only anderson and broyden keep, "
     "not 'fixed_point'"),
    ({"deq": {"backward": "shine", "solver": "newton_krylov"}}, {"seed": {"grid": [0, 1]}}, "not 'newton_krylov'"),
    ({"deq": {"max_iter": 10, "correction": {"steps": 2}}}, {"deq.correction.steps": {"grid": [0, 3, 10]}},
     "correction.steps (10) must be below max_iter (10)"),
    ({"deq": {"correction": {"weight": 1.0}}}, {"seed": {"grid": [0, 1]}}, "correction.steps: Field required"),
])
def test_shine_without_an_estimate_and_a_correction_past_max_iter_are_refused(base, space, named, capsys, tmp_path):
    err = refused({"base": base, "space": space}, capsys, tmp_path)
    assert named in err, err


def test_jfb_shine_and_the_correction_validate(capsys, tmp_path):
    file = tmp_path / "ok.yaml"
    file.write_text(yaml.safe_dump({**HEAD, "base": {"deq": {"solver": "broyden", "correction": {"steps": 0}}},
                                    "space": {"deq.backward": {"choice": ["implicit", "phantom", "jfb", "shine"]},
                                              "deq.correction.steps": {"grid": [0, 3]}}}))
    assert main(["validate", str(file)]) == 0
    file.write_text(yaml.safe_dump({**HEAD, "base": {"deq": {"solver": "continuous", "backward": "shine",
                                                             "backward_options": {"no_estimate": "implicit"}}},
                                    "space": {"seed": {"grid": [0, 1]}}}))
    assert main(["validate", str(file)]) == 0  # the user's explicit choice: shine's implicit solve


def test_deq_compile_is_validated_before_ray(capsys, tmp_path):
    """A bad `deq.compile` (fixed or drawn by the space) is one line, exit 2; the modes pass."""
    seeds = {"seed": {"grid": [0, 1]}}
    err = refused({"base": {"deq": {"compile": "fastest"}}, "space": seeds}, capsys, tmp_path)
    assert "deq.compile" in err and "reduce-overhead" in err, err
    err = refused({"space": {"deq.compile": {"choice": ["none", "fast"]}}}, capsys, tmp_path)
    assert "deq.compile" in err and "fast" in err, err
    file = tmp_path / "ok.yaml"
    file.write_text(yaml.safe_dump({**HEAD, "space": {"deq.compile": {"choice": ["none", "default"]}}}))
    assert main(["validate", str(file)]) == 0
