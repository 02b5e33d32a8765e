"""`deqlab bench` end to end, as a user runs it: a 2-trial digits study (`deqlab run`, checkpoints at their
defaults), then `deqlab bench` on it from another folder; and the dashboard's trial page on that study."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_factory import TINY

from deqlab.cli import main
from deqlab.report.tables import final_epochs
from deqlab.results import load

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
ENV = {k: v for k, v in os.environ.items() if k != "TUNE_GLOBAL_CHECKPOINT_S"}  # Tune's default save period
ENV["RAY_AUTH_MODE"] = "disabled"
ROOT = Path(__file__).resolve().parent.parent
ENV["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])  # this checkout
# 160 test images = 5 batches of 32: the bench's 5 repetitions see the whole test set in the trial's batches
BASE = {**TINY, "epochs": 1, "device": "cpu", "data": {**TINY["data"], "test_subset": 160}}


def _deqlab(*args, cwd, timeout=240):
    return subprocess.run([sys.executable, "-m", "deqlab", *args], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """DEQ and SkipRegDEQ, one epoch each, run with `deqlab run` (checkpoint settings left at their defaults)."""
    root = tmp_path_factory.mktemp("bench")
    raw = {"name": "pair", "base": BASE, "space": {"deq.init": {"grid": ["zeros", "skipreg"]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"},
           "trainer": {"num_workers": 0}}
    (root / "pair.yaml").write_text(yaml.safe_dump(raw))
    run = _deqlab("run", "pair.yaml", "--storage", "results", "--num-cpus", "2", cwd=root)
    assert run.returncode == 0, run.stdout + run.stderr
    return root / "results" / "pair"


def test_bench_times_the_studys_trained_models(study, tmp_path):
    out = _deqlab("bench", str(study), "--baseline", "init=zeros", "--repeats", "5", "--warmup", "1", "--json",
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    final = final_epochs(load(study).trials).set_index("trial_id")
    trials = {t["trial_id"]: t for t in report["trials"]}
    assert set(trials) == set(final.index) and len(trials) == 2
    for trial_id, t in trials.items():
        assert t["init"] == final.loc[trial_id, "param.deq.init"] and t["seed"] == 0
        # the checkpointed model itself: on the trial's own test batches its NFE is the recorded final one
        assert t["nfe_fwd"] == pytest.approx(final.loc[trial_id, "nfe_fwd"], rel=1e-12)
    by_init = {t["init"]: t for t in report["trials"]}
    groups = {g["init"]: g for g in report["groups"]}
    assert groups["skipreg"]["n"] == 1 and groups["zeros"]["predict_time_s_speedup"] == 1
    for time in ("predict_time_s", "train_step_time_s"):
        assert groups["skipreg"][f"{time}_speedup"] == pytest.approx(by_init["zeros"][time] / by_init["skipreg"][time])
        lo, hi = groups["skipreg"][f"{time}_speedup_lo_repeats"], groups["skipreg"][f"{time}_speedup_hi_repeats"]
        assert lo <= groups["skipreg"][f"{time}_speedup"] <= hi
        assert groups["skipreg"][f"{time}_speedup_lo_seeds"] is None  # one seed a side
    assert report["settings"] == {"study": str(study), "batch": None, "repeats": 5, "warmup": 1, "threads": 1,
                                  "device": "cpu", "clock": "wall"}


def test_bench_refuses_what_it_cannot_time(study, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    def bench(*args):
        code = main(["bench", *args])
        out, err = capsys.readouterr()
        return code, out, err.strip().splitlines()

    code, out, err = bench(str(study), "--baseline", "init=skip")
    assert (code, out, err) == (2, "", ["error: no row matches the baseline init=skip; "
                                        "values present: init: skipreg, zeros"])
    missing = tmp_path / "nope"
    assert bench(str(missing)) == (2, "", [f"error: no study at {missing}: expected a study directory with "
                                           "trials/ (deqlab ls lists them)"])
    bare = tmp_path / "pair"  # the same study without its checkpoints
    shutil.copytree(study, bare, ignore=shutil.ignore_patterns("tune", "train", "checkpoints"))
    code, out, err = bench(str(bare))
    assert code == 2 and out == "" and err[-1] == (
        f"error: none of the 2 completed trials of {bare} has a checkpoint to load "
        "(studies keep them unless their file says `checkpoint: {every: 0}`)")
    assert [line.split(":")[0] for line in err[:-1]] == ["warning"] * 2  # one line per trial skipped, and why
    zeros = final_epochs(load(study).trials).set_index("param.deq.init").loc["zeros", "trial_id"]
    half = tmp_path / "half"  # only the DEQ trial's checkpoints removed: the other is timed, with a warning
    shutil.copytree(study, half)
    for folder in [p for p in half.rglob("checkpoint_*") if f'"trial_id": "{zeros}"' in (p / "meta.json").read_text()]:
        shutil.rmtree(folder)
    code, out, err = bench(str(half), "--repeats", "1", "--warmup", "0", "--json")
    assert code == 0 and [t["init"] for t in json.loads(out)["trials"]] == ["skipreg"]
    assert err[0] == f"warning: skipped trial {zeros}: trial {zeros!r} has no checkpoint in {half}"


def test_dashboard_trial_page_shows_the_checkpoint_and_evaluate_command(study, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DEQLAB_DASHBOARD_DIRS", str(study))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=60)
    at.run()
    at.sidebar.radio(key="page").set_value("Trial detail").run()
    trial_id = sorted(final_epochs(load(study).trials)["trial_id"])[0]
    at.selectbox(key="trial_pick").set_value(("pair", trial_id)).run()
    assert not at.exception
    assert [c.value for c in at.code] == [f"deqlab evaluate {study} --trial {trial_id}"]
    assert any(m.value.startswith("Checkpoint after epoch 0 (1 kept)") for m in at.markdown)
