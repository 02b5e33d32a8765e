"""Crash-proofing without Ray: the study lock, resume planning from the files on disk, stored results,
ownership, full-disk detection. (The kill matrix with real drivers is test_resume_matrix.py.)"""

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deqlab.cli import main
from deqlab.results import load
from deqlab.study import parse_study
from deqlab.study import trial
from deqlab.study.driver import prepare
from deqlab.study.durable import StudyLock, is_disk_full, plan_resume
from deqlab.study.spec import StudyError
from study_factory import TINY, metrics, params, write_trial

NO_SPACE = os.strerror(errno.ENOSPC)


def spec_of(name, algorithm="tpe", samples=4):
    raw = {"name": name, "base": {**TINY, "epochs": 2}, "objectives": [{"metric": "test_acc", "mode": "max"}]}
    if algorithm == "grid":
        raw.update(space={"optim.lr": {"grid": [1e-3, 2e-3, 3e-3]}}, search={"algorithm": "grid", "num_samples": 2})
    else:
        raw.update(space={"optim.lr": {"loguniform": [1e-4, 1e-2]}}, search={"num_samples": samples})
    return parse_study(raw, name)


# --------------------------------------------------------------------------- one driver per study


def test_second_lock_is_refused_naming_the_holder_and_released_on_exit(tmp_path):
    with StudyLock(str(tmp_path / "s"), "s"):
        with pytest.raises(StudyError, match=rf"study 's' is already being run by pid {os.getpid()} on "):
            with StudyLock(str(tmp_path / "s"), "s"):
                pass
    with StudyLock(str(tmp_path / "s"), "s"):  # released on exit
        pass


HOLDER = textwrap.dedent("""
    import sys, time
    from deqlab.study.durable import StudyLock
    with StudyLock(sys.argv[1], "s"):
        print("locked", flush=True)
        time.sleep(600)
""")


def test_lock_of_a_killed_driver_is_not_stale(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "locked\n"
    with pytest.raises(StudyError, match=f"pid {proc.pid} on"):
        StudyLock(str(tmp_path / "s"), "s").__enter__()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with StudyLock(str(tmp_path / "s"), "s"):  # the kernel dropped the dead holder's lock
        pass


RACER = textwrap.dedent("""
    import sys
    from deqlab.study import parse_study
    from deqlab.study.durable import StudyLock
    from deqlab.study.driver import prepare
    from deqlab.results import study_path
    from deqlab.study.spec import StudyError
    spec = parse_study({"name": "race", "objectives": [{"metric": "test_acc", "mode": "max"}],
                        "space": {"seed": {"grid": [0]}}}, "race")
    sys.stdin.readline()  # both start together
    try:
        with StudyLock(study_path(sys.argv[1], "race"), "race"):
            prepare(spec, sys.argv[1])
        print("ok")
    except StudyError as exc:
        print("refused:", exc)
""")


def test_two_runs_of_one_name_never_both_pass_the_exists_check(tmp_path):
    for k in range(4):
        root = tmp_path / f"r{k}"
        procs = [subprocess.Popen([sys.executable, "-c", RACER, str(root)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True) for _ in range(2)]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0].strip() for p in procs]
        assert sorted(o.split(":")[0] for o in outs) == ["ok", "refused"], outs
        assert not [p for p in (root / "race").iterdir() if p.name.startswith(".write-probe")]


# --------------------------------------------------------------------------- resume from the files on disk


def test_plan_keeps_finished_trials_sets_aside_unfinished_and_counts_the_rest(tmp_path):
    spec = spec_of("p", samples=5)
    path = prepare(spec, str(tmp_path))
    write_trial(tmp_path, "p", "done", params("zeros", "anderson", 0), [metrics(0.6, 5, 1)] * 2, "completed")
    write_trial(tmp_path, "p", "div", params("zeros", "anderson", 1), [metrics(0.1, 5, 1)], "diverged")
    write_trial(tmp_path, "p", "cut", params("skip", "anderson", 0), [metrics(0.5, 5, 1)], "running")
    w = write_trial(tmp_path, "p", "nospace", params("skip", "anderson", 1), [metrics(0.5, 5, 1)], "failed")
    for row in w.rows:
        row["error"] = f"OSError: [Errno 28] {NO_SPACE}"
    w.flush()
    (Path(path) / "trials" / "torn.parquet").write_bytes(b"PAR1 not really")
    with pytest.warns(UserWarning, match="torn.parquet"):
        plan = plan_resume(str(tmp_path), path, spec)
    assert plan.finished == ["div", "done"] and plan.set_aside == ["cut", "nospace", "torn"]
    assert plan.samples == 3 and plan.grid is None  # 5 - 2 finished
    assert sorted(load(path).trials.trial_id.unique()) == ["div", "done"]
    assert (Path(path) / "orphaned" / "trials" / "cut.parquet").exists()


def test_grid_plan_runs_only_the_points_not_finished(tmp_path):
    spec = spec_of("g", algorithm="grid")  # 3 points x 2 samples
    path = prepare(spec, str(tmp_path))
    for tid, lr, status in (("a", 1e-3, "completed"), ("b", 1e-3, "pruned"), ("c", 2e-3, "completed"),
                            ("d", 3e-3, "running")):
        point = spec.train_config({"optim.lr": lr}).flat_params()
        write_trial(tmp_path, "g", tid, point, [metrics(0.5, 5, 1)], status)
    plan = plan_resume(str(tmp_path), path, spec)
    assert plan.finished == ["a", "b", "c"] and plan.set_aside == ["d"]
    assert sorted(p["optim.lr"] for p in plan.grid) == [2e-3, 3e-3, 3e-3] and plan.samples == 1


def test_a_trial_finished_before_a_setting_existed_counts_as_done_at_that_settings_default(tmp_path):
    """Trial files written by an older deqlab lack the columns of newer settings: resuming its grid study
    must not train those points again when the study leaves the setting at deqlab's default, and must
    when the study sets it to something else."""
    for name, backward, todo in (("old", None, [3e-3]), ("changed", "phantom", [1e-3, 1e-3, 2e-3, 2e-3, 3e-3, 3e-3])):
        spec = spec_of(name, algorithm="grid")
        if backward:
            spec = parse_study({**spec.model_dump(exclude_none=True), "name": name,
                                "base": {**TINY, "epochs": 2, "deq": {**TINY.get("deq", {}), "backward": backward}}},
                               name)
        path = prepare(spec, str(tmp_path))
        for tid, lr in (("a", 1e-3), ("b", 1e-3), ("c", 2e-3), ("d", 2e-3), ("e", 3e-3)):
            point = spec.train_config({"optim.lr": lr}).flat_params()
            del point["deq.backward"]  # no such column yet
            write_trial(tmp_path, name, tid, point, [metrics(0.5, 5, 1)], "completed")
        plan = plan_resume(str(tmp_path), path, spec)
        assert sorted(p["optim.lr"] for p in plan.grid) == todo, name


# --------------------------------------------------------------------------- a finished trial never trains again


def test_a_finished_trial_returns_its_stored_result_instead_of_training(tmp_path, monkeypatch):
    from ray import tune

    spec = spec_of("st")
    write_trial(tmp_path, "st", "fin", params("zeros", "anderson", 0),
                [metrics(0.5, 7, 1), metrics(0.75, 6, 1)], "completed")
    reported = []
    monkeypatch.setattr(tune, "get_context", lambda: type("C", (), {"get_trial_id": lambda self: "fin"})())
    monkeypatch.setattr(tune, "report", reported.append)
    monkeypatch.setattr(trial, "run_one", lambda *a, **k: pytest.fail("a finished trial trained again"))
    trial.run_trial({"optim.lr": 1e-3}, spec=spec, storage=str(tmp_path))
    assert len(reported) == 1 and reported[0]["test_acc"] == 0.75 and reported[0]["nfe_fwd"] == 6.0
    assert reported[0]["epoch"] == 1
    assert trial.stored_result(str(tmp_path), "st", "other") is None  # no file: it has to train
    write_trial(tmp_path, "st", "run", params("zeros", "anderson", 0), [metrics(0.5, 7, 1)], "running")
    assert trial.stored_result(str(tmp_path), "st", "run") is None


# --------------------------------------------------------------------------- ownership, full disks


def test_resume_refuses_a_study_directory_of_another_user(tmp_path, capsys):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory to another user")
    spec = spec_of("theirs")
    path = prepare(spec, str(tmp_path))
    os.chown(path, 65534, 65534)
    code = main(["resume", "theirs", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to resume" in err and "belongs to uid 65534" in err and err.count("\n") == 1
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_disk_full_is_recognised_through_wrappers():
    inner = OSError(errno.ENOSPC, NO_SPACE)
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("exceeding max length") from exc
    except RuntimeError as outer:
        assert is_disk_full(outer)
    assert is_disk_full(RuntimeError(f"ray.exceptions.RayTaskError: OSError: {NO_SPACE}"))
    assert not is_disk_full(RuntimeError("exceeding max length"))
