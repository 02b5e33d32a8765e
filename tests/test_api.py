"""deqlab from Python: `run_study` / `open_study` against the Parquet files and the CLI's own output.

The hand-checked study of tests/study_factory.py (final epochs of completed trials):

    init  solver    test_acc     nfe_fwd   epoch_time_s
    zeros anderson  0.90, 0.92   12, 14    2.0, 2.2
    zeros broyden   0.88, 0.88   10, 10    3.2, 3.2
    skip  anderson  0.95, 0.93    6,  7    1.0, 1.2
    skip  broyden   0.91, 0.89    5,  5    1.5, 1.7

plus a running and a failed trial at 99% accuracy, which no answer may pick.
"""

import io
import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from study_factory import TINY, comparison_study

import deqlab

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # as the other Ray tests


def export_csv(*args: str, cwd) -> pd.DataFrame:
    """`deqlab export --format csv` in a fresh interpreter started from another folder, as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "deqlab", "export", *args, "--format", "csv"], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return pd.read_csv(io.StringIO(out.stdout))


def same_table(api: pd.DataFrame, cli: pd.DataFrame) -> None:
    """The API's frame is the CLI's CSV, to the CSV's 6 significant digits."""
    assert list(api.columns) == list(cli.columns)
    pd.testing.assert_frame_equal(api.reset_index(drop=True), cli, check_dtype=False, rtol=1e-5)


def test_open_study_answers_from_the_hand_checked_study(tmp_path):
    study = deqlab.open_study(comparison_study(tmp_path))
    assert isinstance(study, deqlab.StudyResult) and study.name == "cmp"
    assert len(study.epochs) == 8 * 2 + 2 and len(study.trials) == 10
    assert dict(study.trials["status"].value_counts()) == {"completed": 8, "running": 1, "failed": 1}
    # the study's objectives: max test_acc, min epoch_time_s; the running/failed 99% trials are never best
    best = study.best()
    assert best["trial_id"] == "skip-anderson-0" and best["test_acc"] == 0.95
    assert study.best("epoch_time_s")["epoch_time_s"] == 1.0
    assert study.best("nfe_bwd")["nfe_bwd"] == 2.5  # not an objective: the catalogue's direction (min)
    assert study.best("test_loss")["test_loss"] == pytest.approx(1.1 - 0.95)
    with pytest.raises(ValueError, match="no direction.*mode='max'"):
        study.best("lr")
    assert study.best("lr", mode="max")["lr"] == 1e-3

    same_table(study.table(), export_csv(str(study.path), cwd=tmp_path))
    table = study.table(by="init", metrics=["test_acc", "epoch_time_s"], baseline={"init": "zeros"})
    same_table(table, export_csv(str(study.path), "--by", "init", "--metrics", "test_acc,epoch_time_s",
                                 "--baseline", "init=zeros", cwd=tmp_path))
    skip = table.set_index("init").loc["skip"]
    assert skip["test_acc_pct_mean"] == pytest.approx(92.0) and skip["n"] == 4
    assert skip["epoch_time_s_speedup_vs_init=zeros"] == pytest.approx(2.65 / 1.35)

    fig = study.figure()  # nfe_fwd against test_acc in %, one colour per init, the Pareto front
    points = {t.name: sorted(zip(t.x, t.y)) for t in fig.data if t.name != "Pareto front"}
    assert set(points) == {"DEQ", "SkipDEQ"}  # the dashboard's display names, completed trials and the rest
    assert (5.0, pytest.approx(91.0)) in points["SkipDEQ"] and (1.0, pytest.approx(99.0)) in points["DEQ"]
    assert fig.layout.xaxis.title.text == "NFE fwd" and fig.layout.yaxis.title.text == "Test acc. (%)"


def test_open_study_refuses_a_folder_that_is_no_study(tmp_path):
    with pytest.raises(ValueError, match="no study at"):
        deqlab.open_study(tmp_path)


def test_run_study_overrides_merge_into_sections():
    from deqlab.api import _merged

    raw = {"base": {"epochs": 3, "data": {"name": "digits", "subset": 300}}, "space": {"deq.init": {"choice": [1]}}}
    out = _merged(raw, {"base": {"data": {"subset": 100}}, "space": {"deq.init": {"grid": ["zeros"]}}})
    assert out == {"base": {"epochs": 3, "data": {"name": "digits", "subset": 100}},
                   "space": {"deq.init": {"grid": ["zeros"]}}}  # a space entry is replaced whole
    assert raw["base"]["data"]["subset"] == 300  # the caller's mapping is left as it was


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_run_study_from_python_matches_parquet_and_export(ray_local, tmp_path, capsys):
    """A study file run from Python with overrides, opened again: rows as in the Parquet files, the table
    as `deqlab export` prints it. Its MLflow store is unwritable (a file stands where its folder should be,
    which stops root too): one warning, and no trial lost (deqlab/study/tracking.py)."""
    path = tmp_path / "api.yaml"
    path.write_text(json.dumps({  # JSON is YAML
        "name": "api", "base": {**TINY, "epochs": 3},
        "space": {"deq.init": {"grid": ["zeros", "skip"]}},
        "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the tracking store's folder should be")
    result = deqlab.run_study(path, storage=str(tmp_path / "results"), name="api-run", base={"epochs": 1},
                              tracking={"mlflow": {"tracking_uri": f"sqlite:///{blocker}/mlflow.db"}})
    printed = capsys.readouterr().out
    assert "study api-run: results in" in printed and "api-run: 2 trials" in printed and "| Init |" in printed
    warnings = [line for line in printed.splitlines() if line.startswith("warning: mlflow tracking failed")]
    assert len(warnings) == 1 and "Parquet results are complete" in warnings[0]
    assert result.path == str(tmp_path / "results" / "api-run")

    study = deqlab.open_study(result.path)
    files = sorted((Path(study.path) / "trials").glob("*.parquet"))
    assert len(files) == 2
    rows = [pq.read_table(f).to_pandas() for f in files]
    assert sum(len(r) for r in rows) == len(study.epochs) == 2  # the override: 1 epoch, not the file's 3
    trials = study.trials.set_index("trial_id")
    for r in rows:
        last = r.iloc[-1]
        got = trials.loc[last["trial_id"]]
        assert got["status"] == "completed" and got["epochs"] == 1
        for column in r.columns.drop("trial_id"):  # every column of the file, value by value
            want = last[column]
            if isinstance(want, float) and pd.isna(want):
                assert pd.isna(got[column]), column
            else:
                assert got[column] == want, column
    assert set(trials["param.deq.init"]) == {"zeros", "skip"} and set(trials["param.epochs"]) == {1}

    best = study.best("test_acc")
    assert best["test_acc"] == max(r["test_acc"].iloc[-1] for r in rows)
    same_table(study.table(by="init", metrics="test_acc,nfe_fwd"),
               export_csv(study.path, "--by", "init", "--metrics", "test_acc,nfe_fwd", cwd=tmp_path))
    model, config = study.model(best="test_acc")  # deqlab.load_model: the best trial's last checkpoint
    assert not model.training and config.deq.init == best["param.deq.init"] and config.epochs == 1
    other = trials.index[trials.index != best["trial_id"]][0]
    assert study.model(other)[1].deq.init == trials.loc[other, "param.deq.init"] != config.deq.init
    with pytest.raises(ValueError, match="2 trials with a checkpoint"):
        study.model()
    fig = study.figure("nfe_fwd", "test_acc")
    shown = {(x, round(y, 9)) for t in fig.data if t.name != "Pareto front" for x, y in zip(t.x, t.y)}
    assert shown == {(r["nfe_fwd"].iloc[-1], round(r["test_acc"].iloc[-1] * 100, 9)) for r in rows}


@pytest.mark.ray
@pytest.mark.timeout(600)
def test_the_notebook_example_runs_end_to_end(ray_local, tmp_path, monkeypatch, capsys):
    """docs/notebook.py run as a script from another folder: run -> table -> figure -> best trial."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEQLAB_STORAGE", str(tmp_path / "results"))
    cells = runpy.run_path(str(REPO / "docs" / "notebook.py"), run_name="__main__")
    printed = capsys.readouterr().out
    study, table, best = cells["study"], cells["table"], cells["best"]
    assert Path(study.path).parent == tmp_path / "results"
    trials = study.trials
    assert len(trials) == 4 and set(trials["status"]) == {"completed"} and set(trials["epochs"]) == {1}
    for init, row in table.set_index("init").iterrows():  # the table's means are the trials' own
        accs = trials.loc[trials["param.deq.init"] == init, "test_acc"]
        assert row["n"] == 2 and row["test_acc_pct_mean"] == pytest.approx(100 * accs.mean(), rel=1e-12)
    assert best["test_acc"] == trials["test_acc"].max() and f"best trial {best['trial_id']}" in printed
    assert "Pareto front" in (Path(study.path) / "compare.html").read_text()
