"""What a user sees of a study: `deqlab run` started as a user starts it (Ray's default authentication, no
test settings), every line it prints; then Optuna Dashboard serving the study's optuna.db, as the README says.

One short study serves both (one trial of one epoch): a warning of Ray's or a library's that asks nothing
of the user would show up here as a line of none of the kinds `deqlab run` prints.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from study_factory import TINY

from deqlab.study.summary import final_rows
from deqlab.results import load

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

# Every kind of line `deqlab run` prints for a study that completes (cli/studies.py, study/driver.py).
LINE_KINDS = [
    r"study first: results in results/first",
    r"\[1/1 done, 0 running, \d+ s\] \S+ completed  best .+",  # the trial finished
    r"\[running \d+:\d\d\] .+",  # every 30 s on a slow machine: the running trials
    r"first: 1 trials in \d+ s \(1 completed\)",
    r"\|.+\|",  # the comparison table (Markdown)
    r"Mean ± std over n trials .+",
    r"Pareto front \(max test_acc, min nfe_fwd\):",
    r" *trial +Init +Solver +Test acc\. \(%\) +NFE fwd",
    r" *\S+ +\S+ +\S+ +[\d.]+ +[\d.]+",  # a Pareto-front row
    r"results: .+/results/first",
    r"",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, deadline: float):
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.load(r)
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


def test_a_study_prints_only_lines_a_user_can_act_on_and_optuna_dashboard_serves_it(tmp_path):
    raw = {"name": "first", "base": {**TINY, "epochs": 1},
           "space": {"deq.tol": {"loguniform": [1e-4, 1e-2]}},  # Optuna's TPE, as the quickstart: an optuna.db
           "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}],
           "search": {"algorithm": "tpe", "seed": 0, "num_samples": 1}}
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # Ray's defaults, as a user has them
    out = subprocess.run([sys.executable, "-m", "deqlab", "run", "first.yaml", "--storage", "results",
                          "--num-cpus", "2"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr == "", out.stderr  # Ray's token-authentication notice was the one line here
    lines = out.stdout.splitlines()
    study = tmp_path / "results" / "first"
    assert lines[-2:] == [f"dashboard: deqlab dashboard {study}",
                          f"export: deqlab export {study} --format latex -o table.tex"], out.stdout
    stray = [line for line in lines[:-2] if not any(re.fullmatch(kind, line) for kind in LINE_KINDS)]
    assert stray == [], out.stdout
    assert sum(bool(re.fullmatch(LINE_KINDS[1], line)) for line in lines) == 1, out.stdout

    # Optuna Dashboard serves the study's own optuna.db: the trial, with the values its Parquet file holds
    final = final_rows(load(study).trials)
    db = study / "optuna.db"
    assert db.is_file()
    port = _free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "optuna-dashboard"), f"sqlite:///{db}",
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/api/studies"
        studies = _get_json(base, time.time() + 60)["study_summaries"]
        assert [(s["study_name"], s["directions"]) for s in studies] == [("first", ["maximize", "minimize"])]
        trials = _get_json(f"{base}/{studies[0]['study_id']}", time.time() + 30)["trials"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    (trial,) = trials
    (row,) = [row for _, row in final.iterrows()]
    assert trial["state"] == "Complete"
    assert [(p["name"], float(p["param_external_value"])) for p in trial["params"]] == [
        ("deq.tol", pytest.approx(row["param.deq.tol"], rel=1e-12))]
    assert trial["values"] == pytest.approx([row["test_acc"], row["nfe_fwd"]])


FIT_SCRIPT = """
import sys
import ray
from ray import tune
from deqlab.study.tuner import TRACKER_INTEGRATIONS, fit

ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
def tuner(name):
    return tune.Tuner(lambda config: {"x": 1}, run_config=tune.RunConfig(
        name=name, storage_path=sys.argv[1], callbacks=[tune.Callback()], verbose=0))
fit(tuner("ours"))
print("after deqlab's fit:", sorted(m for m in TRACKER_INTEGRATIONS + ("mlflow", "wandb") if m in sys.modules))
tuner("plain").fit()
print("after Tune's fit:", sorted(m for m in ("mlflow", "wandb") if m in sys.modules))
"""


def test_a_study_start_imports_no_tracker_library_it_does_not_use(tmp_path):
    """Tune's callback telemetry would import mlflow and wandb (2.2 s of every `deqlab run`); deqlab's `fit`
    spares them. The same Tuner fitted as Tune does shows the import happen, so this test can fail."""
    out = subprocess.run([sys.executable, "-c", FIT_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                         timeout=240, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "after deqlab's fit: []" in out.stdout, out.stdout
    assert "after Tune's fit: ['mlflow', 'wandb']" in out.stdout, out.stdout
