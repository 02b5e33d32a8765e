"""Driver-side bookkeeping and summaries, on Parquet files written in the results schema (no Ray)."""

import pandas as pd
import pytest

from deqlab.cli import main
from deqlab.results import StudyStore, TrialWriter, finalize_trial, load, write_text_atomic
from deqlab.study import parse_study
from deqlab.study.summary import comparison_table, final_rows, list_studies, pareto_front

SPEC = parse_study({
    "name": "s", "base": {"epochs": 2}, "space": {"deq.init": {"choice": ["zeros", "skip"]}},
    "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}],
})


def write_trial(root, trial, init, accs, nfes, status="completed"):
    w = TrialWriter(str(root), "s", trial, {"deq.init": init, "deq.solver": "anderson"}, {"seed": 0})
    for e, (a, n) in enumerate(zip(accs, nfes)):
        w.add_epoch(e, {"test_acc": a, "nfe_fwd": n})
    w.set_status(status)
    w.flush()


@pytest.fixture
def study(tmp_path):
    write_text_atomic(SPEC.dump(), str(tmp_path / "s" / "study.yaml"))
    write_trial(tmp_path, "t1", "zeros", [0.5, 0.90], [10, 12.0])
    write_trial(tmp_path, "t2", "zeros", [0.6, 0.80], [9, 8.0])
    write_trial(tmp_path, "t3", "skip", [0.7, 0.85], [5, 4.0])
    write_trial(tmp_path, "t4", "skip", [0.4, 0.70], [6, 6.0])   # dominated by t3
    write_trial(tmp_path, "t5", "skip", [0.2], [30.0], "running")
    return tmp_path


def test_pareto_front_is_the_non_dominated_set(study):
    final = final_rows(load(study / "s").trials)
    front = pareto_front(final, SPEC.objectives)
    assert sorted(front.trial_id) == ["t1", "t3"]  # t2 (0.80, 8) is dominated by t3 (0.85, 4)


def test_comparison_table_groups_completed_trials(study):
    """The closing table of `deqlab run` is `deqlab export`'s: the running t5 is left out."""
    assert comparison_table(str(study / "s"), SPEC).splitlines()[:4] == [
        "| Init | Solver | n | Test acc. (%) ↑ | NFE fwd ↓ |",
        "|:---|:---|---:|---:|---:|",
        "| SkipDEQ | Anderson | 2 | 77 ± 11 | **5.0 ± 1.4** |",
        "| DEQ | Anderson | 2 | **85 ± 7** | 10.0 ± 2.8 |",  # one precision per column
    ]


def test_finalize_relabels_only_running_trials(study):
    assert finalize_trial(str(study), "s", "t5", "pruned") == "pruned"
    assert StudyStore.of(str(study), "s").trial_progress("t5") == ("pruned", 0)
    assert finalize_trial(str(study), "s", "t1", "failed") == "completed"  # a final status is kept
    # a trial that died before its first epoch is still counted, with its error
    assert finalize_trial(str(study), "s", "t6", "failed", error="CUDA error", params={"deq.init": "skip"}) == "failed"
    rows = load(study / "s").trials
    t6 = rows[rows.trial_id == "t6"].iloc[0]
    assert t6.epoch == -1 and t6.error == "CUDA error" and t6["param.deq.init"] == "skip" and pd.isna(t6.test_acc)
    with pytest.raises(ValueError, match="unknown final status"):
        finalize_trial(str(study), "s", "t1", "running")
    with pytest.raises(ValueError, match="invalid trial name"):
        finalize_trial(str(study), "s", "../t1", "failed")


def test_ls_lists_studies_with_counts_and_best(study, capsys):
    (study / "not_a_study").mkdir()
    assert main(["ls", str(study)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == "s: 5 trials (1 running, 4 completed) best test_acc 0.9"
    assert list_studies(str(study / "s" / "trials")) == f"no studies in {study / 's' / 'trials'}"
    assert main(["ls", str(study / "missing")]) == 2
    assert "no results root" in capsys.readouterr().err
