"""What the command line tells a user: fast help, validate on every file in studies/, progress while trials
run, and a warning when a search never tried one of its choices."""

from __future__ import annotations

import glob
import subprocess
import sys

from deqlab.cli import main
from deqlab.results import TrialWriter
from deqlab.study import parse_study
from deqlab.study.heartbeat import Heartbeat
from deqlab.study.summary import untried_choices


def test_help_loads_no_torch_ray_or_streamlit():
    """`deqlab --help` and every command's --help parse without the heavy imports (well under 0.5 s)."""
    code = ("import sys\nfrom deqlab.cli import build_parser\nbuild_parser()  # configures every command\n"
            "print(sorted(m for m in ('torch', 'ray', 'streamlit', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    # the export's formats are spelled in deqlab/cli/export.py (no pandas import for --help): the same as deqlab.report.tables's
    from deqlab.report import tables as export
    from deqlab.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["export"]
    assert next(a for a in sub._actions if a.dest == "format").choices == export.FORMATS


def test_validate_accepts_every_file_in_studies(capsys):
    files = sorted(glob.glob("studies/*.yaml"))
    assert "studies/train_digits.yaml" in files
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out
    assert "studies/train_digits.yaml: ok (a single-run training config: deqlab train studies/train_digits.yaml)" in out
    assert "digits / mlp, skipreg init, anderson, 0+4 epochs" in out


def test_heartbeat_shows_running_epochs_and_an_eta():
    now = [0.0]
    beat = Heartbeat(total_trials=4, interval_s=30, clock=lambda: now[0])
    now[0] = 10.0
    assert beat.update("a", 0, 10) is None  # not due yet
    now[0] = 40.0
    line = beat.update("b", 1, 10)
    # 3 epochs in 40 s; left: a 9 + b 8 + two unstarted trials x 10 = 37 epochs -> 37 * 40 / 3 = 493 s = 8 min
    assert line == "[running 0:40] a epoch 1/10, b epoch 2/10; 2 of 4 trials started; ETA ~8 min (no pruning assumed)"
    beat.finish("a")  # pruned after one epoch: nothing left for it
    now[0] = 80.0
    # 4 epochs in 80 s; left: b 7 + two unstarted x 10 = 27 -> 27 * 80 / 4 = 540 s = 9 min
    assert beat.update("b", 2, 10).endswith("b epoch 3/10; 2 of 4 trials started; ETA ~9 min (no pruning assumed)")


def test_untried_choice_is_reported(tmp_path, capsys):
    spec = parse_study({"name": "s", "base": {"epochs": 1},
                        "space": {"deq.solver": {"choice": ["anderson", "broyden", "fixed_point"]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}]})
    for i, solver in enumerate(["anderson", "anderson", "fixed_point"]):
        w = TrialWriter(str(tmp_path), "s", f"t{i}", {"deq.solver": solver}, {"seed": 0})
        w.add_epoch(0, {"test_acc": 0.5})
        w.set_status("completed")
        w.flush()
    assert untried_choices(str(tmp_path / "s"), spec) == ["deq.solver: never tried broyden (of 3 choices)"]


def test_pareto_table_uses_the_display_names_and_units(tmp_path):
    spec = parse_study({"name": "s", "base": {"epochs": 1}, "space": {"deq.init": {"choice": ["zeros", "skipreg"]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}, {"metric": "nfe_fwd", "mode": "min"}]})
    for trial, init, acc, nfe in (("a", "skipreg", 0.9512, 6.0), ("b", "zeros", 0.93, 9.0), ("c", "zeros", 0.96, 12.0)):
        w = TrialWriter(str(tmp_path), "s", trial, {"deq.init": init, "deq.solver": "anderson"}, {"seed": 0})
        w.add_epoch(0, {"test_acc": acc, "nfe_fwd": nfe})
        w.set_status("completed")
        w.flush()
    from deqlab.study.summary import pareto_table

    assert pareto_table(str(tmp_path / "s"), spec).splitlines() == [
        "trial       Init   Solver  Test acc. (%)  NFE fwd",
        "    c        DEQ Anderson             96       12",  # 4 significant digits
        "    a SkipRegDEQ Anderson          95.12        6",
    ]


def test_tune_traceback_of_a_trial_on_a_full_disk_is_hidden_others_are_kept():
    """A trial hitting a full disk ends the study with deqlab's one line (tests/test_resume_matrix.py, case f);
    Tune's traceback of that failure is dropped, its traceback of any other trial failure is not."""
    import logging

    from deqlab.study.tuner import _not_a_full_disk

    def record(msg, exc):
        return logging.LogRecord("ray.tune.execution.tune_controller", logging.ERROR, __file__, 1, msg, None,
                                 (type(exc), exc, None) if exc else None)

    full = RuntimeError("ray::run_trial() ... OSError: [Errno 28] No space left on device: 'epochs.parquet'")
    assert not _not_a_full_disk(record("Trial task failed for trial run_trial_0be9e661", full))
    assert _not_a_full_disk(record("Trial task failed for trial run_trial_0be9e661", ValueError("nan loss")))
    assert _not_a_full_disk(record("Trial task failed for trial run_trial_0be9e661", None))
    assert _not_a_full_disk(record("Experiment checkpoint failed", full))
