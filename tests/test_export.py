"""Comparison tables: exact text in every format for a hand-checked data set, and clear errors.

The data set (tests/study_factory.py) has, at the final epoch of its completed trials:

    init  solver    test_acc      nfe_fwd    epoch_time_s
    zeros anderson  0.90, 0.92    12, 14     2.0, 2.2   -> 91.0 ± 1.4, 13.0 ± 1.4, 2.10 ± 0.14
    zeros broyden   0.88, 0.88    10, 10     3.2, 3.2   -> 88.0 ± 0,   10.0 ± 0,   3.20 ± 0
    skip  anderson  0.95, 0.93     6,  7     1.0, 1.2   -> 94.0 ± 1.4,  6.5 ± 0.7, 1.10 ± 0.14
    skip  broyden   0.91, 0.89     5,  5     1.5, 1.7   -> 90.0 ± 1.4,  5.00 ± 0,  1.60 ± 0.14

(std with ddof=1: 0.02/sqrt(2) = 0.0141 -> 1.4 points; speedup vs zeros: 2.1/1.1 = 1.91, 3.2/1.6 = 2.00).
A running and a failed trial with 99% accuracy and a decoy first epoch must not reach the table.
"""

import math
import shutil
import subprocess

import pandas as pd
import pytest
from system_tools import skip_or_fail_without
from study_factory import comparison_study, metrics, params, write_trial

from deqlab import export
from deqlab.cli import main
from deqlab.results import load

BY = ["init", "solver"]
METRICS = ["test_acc", "nfe_fwd", "epoch_time_s"]

MARKDOWN = """\
| init | solver | n | Test acc. (%) | NFE fwd | Epoch time (s) | Speedup vs init=zeros |
|:---|:---|---:|---:|---:|---:|---:|
| skip | anderson | 2 | **94.0 ± 1.4** | 6.5 ± 0.7 | **1.10 ± 0.14** | 1.91× |
| skip | broyden | 2 | 90.0 ± 1.4 | **5.00 ± 0** | 1.60 ± 0.14 | 2.00× |
| zeros | anderson | 2 | 91.0 ± 1.4 | 13.0 ± 1.4 | 2.10 ± 0.14 | 1.00× |
| zeros | broyden | 2 | 88.0 ± 0 | 10.0 ± 0 | 3.20 ± 0 | 1.00× |
"""

LATEX = r"""\begin{tabular}{llrrrrr}
\toprule
init & solver & $n$ & Test acc. (\%) & NFE fwd & Epoch time (s) & Speedup vs init=zeros \\
\midrule
skip & anderson & 2 & \textbf{94.0 $\pm$ 1.4} & 6.5 $\pm$ 0.7 & \textbf{1.10 $\pm$ 0.14} & 1.91$\times$ \\
skip & broyden & 2 & 90.0 $\pm$ 1.4 & \textbf{5.00 $\pm$ 0} & 1.60 $\pm$ 0.14 & 2.00$\times$ \\
zeros & anderson & 2 & 91.0 $\pm$ 1.4 & 13.0 $\pm$ 1.4 & 2.10 $\pm$ 0.14 & 1.00$\times$ \\
zeros & broyden & 2 & 88.0 $\pm$ 0 & 10.0 $\pm$ 0 & 3.20 $\pm$ 0 & 1.00$\times$ \\
\bottomrule
\end{tabular}
"""

CSV = """\
init,solver,n,test_acc_pct_mean,test_acc_pct_std,nfe_fwd_mean,nfe_fwd_std,epoch_time_s_mean,epoch_time_s_std,\
epoch_time_s_speedup_vs_init=zeros
skip,anderson,2,94,1.41421,6.5,0.707107,1.1,0.141421,1.90909
skip,broyden,2,90,1.41421,5,0,1.6,0.141421,2
zeros,anderson,2,91,1.41421,13,1.41421,2.1,0.141421,1
zeros,broyden,2,88,0,10,0,3.2,0,1
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return comparison_study(tmp_path_factory.mktemp("results"))


@pytest.fixture(scope="module")
def trials(study):
    return load(study).trials


@pytest.fixture(scope="module")
def table(trials):
    return export.aggregate(trials, BY, METRICS, baseline={"init": "zeros"})


def test_aggregate_uses_final_epoch_of_completed_trials_only(table):
    f = table.frame
    assert list(zip(f["init"], f["solver"])) == [("skip", "anderson"), ("skip", "broyden"),
                                                 ("zeros", "anderson"), ("zeros", "broyden")]
    assert list(f["n"]) == [2, 2, 2, 2]  # the running and failed trials are not counted
    assert f["test_acc_mean"].tolist() == pytest.approx([0.94, 0.90, 0.91, 0.88])
    assert f["test_acc_std"].tolist() == pytest.approx([0.02 / math.sqrt(2)] * 3 + [0.0])
    assert f["nfe_fwd_mean"].tolist() == pytest.approx([6.5, 5.0, 13.0, 10.0])
    assert f["epoch_time_s_mean"].tolist() == pytest.approx([1.1, 1.6, 2.1, 3.2])
    assert f["ratio"].tolist() == pytest.approx([2.1 / 1.1, 3.2 / 1.6, 1.0, 1.0])
    assert table.group_columns == ("param.deq.init", "param.deq.solver")
    assert table.ratio_header == "Speedup vs init=zeros"


@pytest.mark.parametrize("fmt, expected", [("markdown", MARKDOWN), ("latex", LATEX), ("csv", CSV)])
def test_render_exact_text(table, fmt, expected):
    assert export.render(table, fmt) == expected


def test_latex_compiles_in_a_standard_document(table, tmp_path):
    if shutil.which("pdflatex") is None:
        skip_or_fail_without("pdflatex", "apt-get install texlive-latex-base texlive-latex-recommended; .ci/run does")
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
           + export.render(table, "latex") + "\\end{document}\n")
    (tmp_path / "t.tex").write_text(doc)
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "t.pdf").stat().st_size > 0


def test_direction_comes_from_objectives_and_unknown_metrics_get_no_bold(trials):
    # lr is a logged number with no built-in direction: no bold unless an objective names it
    plain = export.render(export.aggregate(trials, ["init"], ["lr"]), "markdown")
    assert "**" not in plain
    flipped = export.aggregate(trials, ["init"], ["test_acc"], modes={"test_acc": "min"})
    md = export.render(flipped, "markdown")
    # zeros: (0.90+0.92+0.88+0.88)/4 = 0.895, std 0.0191; skip: 0.92, std 0.0258 (one digit: 3)
    assert md.splitlines()[2:] == ["| skip | 4 | 92 ± 3 |", "| zeros | 4 | **89.5 ± 1.9** |"]
    assert export.objective_modes([None, {}, {"objectives": "x"}, {"objectives": [{"metric": "lr", "mode": "min"},
                                   {"metric": 3}, {"metric": "a", "mode": "sideways"}]}]) == {"lr": "min"}


def test_single_group_and_total_time(trials):
    table = export.aggregate(trials, ["solver"], ["total_time_s"])
    # total time sums both epochs: the decoy epoch took 5x the final one, so 6x in all
    assert table.frame["total_time_s_mean"].tolist() == pytest.approx([6 * 1.6, 6 * 2.4])
    assert export.render(table, "markdown").splitlines()[0] == "| solver | n | Train time (s) |"


@pytest.mark.parametrize("mean, std, expected", [
    (94.0, 1.41421, ("94.0", "1.4")),       # leading 1: two digits of the std
    (6.5, 0.707, ("6.5", "0.7")),
    (0.91234, 0.0456, ("0.91", "0.05")),
    (1234.5, 56.0, ("1234", "56")),         # never rounded left of the decimal point
    (12.3456, math.nan, ("12.3", "")),      # one trial: three significant digits, no spread
    (2.0, 0.0, ("2.00", "0")),
    (3.2e-5, 4.1e-6, ("3.20e-05", "4.1e-06")),
    (math.nan, 1.0, ("–", "")),
])
def test_format_value(mean, std, expected):
    assert export.format_value(mean, std) == expected


def test_resolve_column_exact_param_suffix_and_ambiguous():
    frame = pd.DataFrame(columns=["seed", "param.seed", "param.deq.init", "param.deq.tol", "param.other.tol"])
    assert export.resolve_column(frame, "seed") == "seed"
    assert export.resolve_column(frame, "deq.init") == "param.deq.init"
    assert export.resolve_column(frame, "init") == "param.deq.init"
    with pytest.raises(ValueError, match="'tol' is ambiguous: it matches param.deq.tol, param.other.tol"):
        export.resolve_column(frame, "tol")


def test_unknown_names_list_what_is_available(trials):
    with pytest.raises(ValueError, match=r"unknown metric 'acc'; available: train_loss, .*test_acc.*total_time_s"):
        export.aggregate(trials, BY, ["acc"])
    with pytest.raises(ValueError, match=r"unknown group column 'width2'; available: study, seed, .*deq\.init"):
        export.aggregate(trials, ["width2"], METRICS)
    with pytest.raises(ValueError, match="'deq.init' .* is not a numeric result"):
        export.aggregate(trials, ["solver"], ["deq.init"])
    with pytest.raises(ValueError, match="no row matches the baseline init=deq; values present: init: skip, zeros"):
        export.aggregate(trials, BY, METRICS, baseline={"init": "deq"})
    with pytest.raises(ValueError, match="baseline names tol, which is not a group column"):
        export.aggregate(trials, BY, METRICS, baseline={"tol": "0.001"})
    with pytest.raises(ValueError, match="unknown format 'html'; valid: latex, markdown, csv"):
        export.render(export.aggregate(trials, BY, METRICS), "html")
    with pytest.raises(ValueError, match="baseline must look like init=zeros"):
        export.parse_baseline("zeros")


def test_no_completed_trials_is_an_error_that_says_what_was_found(tmp_path):
    write_trial(tmp_path, "live", "a", params("zeros", "anderson", 0), [metrics(0.5, 9, 1)], "running")
    write_trial(tmp_path, "live", "b", params("skip", "anderson", 0), [metrics(0.5, 9, 1)], "pruned")
    with pytest.raises(ValueError, match=r"no completed trials to aggregate \(found: 1 (running|pruned), 1"):
        export.aggregate(load(tmp_path / "live").trials, BY, METRICS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no trials found"):
        export.aggregate(load(tmp_path / "empty").trials, BY, METRICS)


def test_cli_export_writes_the_table_and_reads_objectives(study, tmp_path, capsys):
    out = tmp_path / "out" / "table.tex"
    # the results root (the study's parent) expands to the study
    code = main(["export", str(study.parent), "--by", "init,solver", "--metrics", ",".join(METRICS),
                 "--format", "latex", "--baseline", "init=zeros", "-o", str(out)])
    assert code == 0
    assert out.read_text() == LATEX
    assert "wrote" in capsys.readouterr().out
    assert main(["export", str(study), "--format", "markdown", "--baseline", "init=zeros"]) == 0
    assert capsys.readouterr().out == MARKDOWN


def test_cli_export_errors_exit_2_with_one_line(study, tmp_path, capsys):
    assert main(["export", str(study), "--metrics", "accuracy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown metric 'accuracy'; available:") and err.count("\n") == 1
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "no such results directory" in capsys.readouterr().err


def test_cli_export_warns_about_unreadable_files(study, tmp_path, capsys):
    copy = tmp_path / "cmp"
    shutil.copytree(study, copy)
    (copy / "trials" / "broken.parquet").write_bytes(b"not parquet")
    (copy / "study.yaml").write_text("objectives: [unclosed\n")
    assert main(["export", str(copy)]) == 0
    captured = capsys.readouterr()
    assert "warning: skipped unreadable results file" in captured.err and "broken.parquet" in captured.err
    assert "unreadable study spec" in captured.err
    assert captured.out == export.render(export.aggregate(load(study).trials, BY, METRICS), "markdown")
