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

import numpy as np
import pandas as pd
import pytest
from system_tools import skip_or_fail_without
from study_factory import comparison_study, metrics, params, write_trial

from deqlab.report import tables as export
from deqlab.report.ratio import ratio_interval
from deqlab.report.render import column_format, format_value, header
from deqlab.cli import main
from deqlab.results import load

BY = ["init", "solver"]
METRICS = ["test_acc", "nfe_fwd", "epoch_time_s"]

MARKDOWN = """\
| Init | Solver | n | Test acc. (%) ↑ | NFE fwd ↓ | Epoch time (s) ↓ | Speedup vs DEQ |
|:---|:---|---:|---:|---:|---:|---:|
| SkipDEQ | Anderson | 2 | **94.0 ± 1.4** | 6.5 ± 0.7 | **1.10 ± 0.14** | 1.91× [1.83, 2.00] |
| SkipDEQ | Broyden | 2 | 90.0 ± 1.4 | **5.0 ± 0.0** | 1.60 ± 0.14 | 2.00× [1.88, 2.13] |
| DEQ | Anderson | 2 | 91.0 ± 1.4 | 13.0 ± 1.4 | 2.10 ± 0.14 | 1.00× |
| DEQ | Broyden | 2 | 88.0 ± 0.0 | 10.0 ± 0.0 | 3.20 ± 0.00 | 1.00× |

Mean ± std over n trials (final epoch of completed trials). Bold: best mean per column (↑ higher, ↓ lower is \
better) among rows with n ≥ 2; † marks rows with fewer trials. Speedup vs DEQ: baseline / row of mean epoch time; \
in brackets its 95% bootstrap interval over seeds (paired by seed, 2000 resamples).
"""

S = "uncertainty-mode=separate, table-align-uncertainty, mode=text, reset-text-series=false"
LATEX_ROWS = r"""\begin{tabular}{llrS[table-format=2.1(1.1), S]S[table-format=2.1(1.1), S]S[table-format=1.2(1.2), S]r}
\toprule
Init & Solver & $n$ & {Test acc. (\%) $\uparrow$} & {NFE fwd $\downarrow$} & {Epoch time (s) $\downarrow$} & Speedup vs DEQ \\
\midrule
SkipDEQ & Anderson & 2 & \bfseries 94.0 \pm 1.4 & 6.5 \pm 0.7 & \bfseries 1.10 \pm 0.14 & 1.91$\times$ [1.83, 2.00] \\
SkipDEQ & Broyden & 2 & 90.0 \pm 1.4 & \bfseries 5.0 \pm 0.0 & 1.60 \pm 0.14 & 2.00$\times$ [1.88, 2.13] \\
DEQ & Anderson & 2 & 91.0 \pm 1.4 & 13.0 \pm 1.4 & 2.10 \pm 0.14 & 1.00$\times$ \\
DEQ & Broyden & 2 & 88.0 \pm 0.0 & 10.0 \pm 0.0 & 3.20 \pm 0.00 & 1.00$\times$ \\
\bottomrule
\end{tabular}
""".replace(", S]", ", " + S + "]")
NOTE = (r"Mean $\pm$ std over n trials (final epoch of completed trials). Bold: best mean per column ($\uparrow$ "
        r"higher, $\downarrow$ lower is better) among rows with n $\geq$ 2; $^\dagger$ marks rows with fewer trials. "
        r"Speedup vs DEQ: baseline / row of mean epoch time; in brackets its 95\% bootstrap interval over seeds "
        r"(paired by seed, 2000 resamples). A value without $\pm$ had no spread over its trials.")
LATEX = ("\\begin{table}[t]\n\\centering\n\\caption{Solvers on digits. " + NOTE + "}\n\\label{tab:solvers}\n"
         + LATEX_ROWS + "\\end{table}\n")

CSV = """\
init,solver,n,test_acc_pct_mean,test_acc_pct_std,nfe_fwd_mean,nfe_fwd_std,epoch_time_s_mean,epoch_time_s_std,\
epoch_time_s_speedup_vs_init=zeros,epoch_time_s_speedup_vs_init=zeros_ci_low,epoch_time_s_speedup_vs_init=zeros_ci_high
skip,anderson,2,94,1.41421,6.5,0.707107,1.1,0.141421,1.90909,1.83333,2
skip,broyden,2,90,1.41421,5,0,1.6,0.141421,2,1.88235,2.13333
zeros,anderson,2,91,1.41421,13,1.41421,2.1,0.141421,1,,
zeros,broyden,2,88,0,10,0,3.2,0,1,,
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
    assert table.ratio_header == "Speedup vs DEQ"


@pytest.mark.parametrize("fmt, expected", [("markdown", MARKDOWN), ("csv", CSV)])
def test_render_exact_text(table, fmt, expected):
    assert export.render(table, fmt) == expected


def test_latex_table_caption_label_and_tabular_only(table):
    assert export.render(table, "latex", caption="Solvers on digits.", label="tab:solvers") == LATEX
    bare = export.render(table, "latex", tabular_only=True)
    assert bare.splitlines()[0] == "% " + NOTE
    assert bare.splitlines()[1] == r"% needs \usepackage{booktabs} \usepackage{siunitx}"
    assert bare.split("\n", 2)[2] == LATEX_ROWS


def test_latex_compiles_in_a_standard_document(table, trials, tmp_path):
    if shutil.which("pdflatex") is None or shutil.which("kpsewhich") is None:
        skip_or_fail_without("pdflatex", "apt-get install texlive-latex-base texlive-latex-recommended "
                             "texlive-science; .ci/run does")
    if subprocess.run(["kpsewhich", "siunitx.sty"], capture_output=True).returncode != 0:
        skip_or_fail_without("siunitx", "apt-get install texlive-science; .ci/run does")
    one_seed = export.aggregate(trials[trials["seed"] == 0], ["init", "solver"], ["residual", "infer_time_s"])
    doc = ("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{siunitx}\n\\begin{document}\n"
           + export.render(table, "latex", caption="Solvers.", label="tab:a")
           + export.render(one_seed, "latex", tabular_only=True) + "\\end{document}\n")
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
    # zeros: (0.90+0.92+0.88+0.88)/4 = 0.895, std 0.0191 (leading 1: one decimal, for the whole column);
    # skip: 0.92, std 0.0258
    assert md.splitlines()[2:4] == ["| SkipDEQ | 4 | 92.0 ± 2.6 |", "| DEQ | 4 | **89.5 ± 1.9** |"]
    assert export.objective_modes([None, {}, {"objectives": "x"}, {"objectives": [{"metric": "lr", "mode": "min"},
                                   {"metric": 3}, {"metric": "a", "mode": "sideways"}]}]) == {"lr": "min"}


def test_single_group_and_total_time(trials):
    table = export.aggregate(trials, ["solver"], ["total_time_s"])
    # total time sums both epochs: the decoy epoch took 5x the final one, so 6x in all
    assert table.frame["total_time_s_mean"].tolist() == pytest.approx([6 * 1.6, 6 * 2.4])
    assert export.render(table, "markdown").splitlines()[0] == "| Solver | n | Train time (s) ↓ |"


@pytest.mark.parametrize("unit, scale, means, stds, expected", [
    ("%", 100.0, [0.94, 0.90], [0.0141, 0.0], ("%", 100.0, 0, 1)),       # std 1.4 points: one decimal
    ("", 1.0, [6.5, 5.0, 13.0], [0.707, 0.0, 1.41], ("", 1.0, 0, 1)),  # zero std does not ask for more
    ("s", 1.0, [0.0011, 0.0016], [0.00014, math.nan], ("ms", 1e3, 0, 2)),  # 1.10 ms ± 0.14
    ("s", 1.0, [2e-6, 3e-6], [math.nan, math.nan], ("µs", 1e6, 0, 2)),  # no spread: 3 significant digits
    ("", 1.0, [3.2e-5, 8.1e-5], [4.1e-6, 1e-6], ("", 1.0, -5, 2)),      # one power of ten; 0.10: 2 decimals
    ("", 1.0, [1234.5, 1300.0], [56.0, 40.0], ("", 1.0, 0, 0)),         # never rounded left of the point
])
def test_column_format_one_precision_per_column(unit, scale, means, stds, expected):
    col = column_format("x", unit, scale, "min", means, stds)
    assert (col.unit, col.factor, col.exponent, col.decimals) == expected


def test_format_value_uses_the_column_precision():
    col = column_format("Residual", "", 1.0, "min", [3.2e-5, 8.16e-5], [4.1e-6, math.nan])
    assert header(col) == "Residual (×1e-5) ↓"
    assert [format_value(m, s, col) for m, s in [(3.2e-5, 4.1e-6), (8.16e-5, math.nan), (math.nan, 1.0)]] == [
        ("3.2", "0.4"), ("8.2", ""), ("–", "")]


def test_resolve_column_exact_param_suffix_and_ambiguous():
    frame = pd.DataFrame(columns=["seed", "param.seed", "param.deq.init", "param.deq.tol", "param.other.tol"])
    assert export.resolve_column(frame, "seed") == "seed"
    assert export.resolve_column(frame, "deq.init") == "param.deq.init"
    assert export.resolve_column(frame, "init") == "param.deq.init"
    with pytest.raises(ValueError, match="'tol' is ambiguous: it matches param.deq.tol, param.other.tol"):
        export.resolve_column(frame, "tol")
    # the paper study sets deq.backward_options.solver as well: `solver` is still the forward solver
    nested = pd.DataFrame(columns=["param.deq.solver", "param.deq.backward_options.solver"])
    assert export.resolve_column(nested, "solver") == "param.deq.solver"


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
                 "--format", "latex", "--baseline", "init=zeros", "-o", str(out), "--caption", "Solvers on digits.",
                 "--label", "tab:solvers"])
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


def test_small_n_rows_are_marked_and_never_best(tmp_path):
    # one lucky SkipRegDEQ trial (99%, 1 NFE) against two-seed groups: marked †, not bold
    root = comparison_study(tmp_path)
    write_trial(tmp_path, "cmp", "lucky", params("skipreg", "newton_krylov", 0), [metrics(0.99, 1.0, 0.5)],
                "completed")
    table = export.aggregate(load(root).trials, BY, ["test_acc", "nfe_fwd"])
    md = export.render(table, "markdown").splitlines()
    assert table.min_n == 2
    assert md[4] == "| SkipRegDEQ | Newton-Krylov | 1† | 99.0 | 1.0 |"
    assert md[2] == "| SkipDEQ | Anderson | 2 | **94.0 ± 1.4** | 6.5 ± 0.7 |"
    assert "among rows with n ≥ 2; † marks rows with fewer trials" in md[-1]
    # one row with enough trials is not "best" of anything
    alone = export.aggregate(load(root).trials[lambda t: t["trial_id"].isin(["lucky", "skip-anderson-0",
                                                                            "skip-anderson-1"])], BY, ["test_acc"])
    assert "**" not in export.render(alone, "markdown")


def test_continuous_group_is_refused_with_a_hint_or_binned(tmp_path):
    tols = [1e-4, 1.5e-4, 2e-4, 3e-4, 5e-4, 8e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    for i, tol in enumerate(tols):
        write_trial(tmp_path, "tpe", f"t{i}", params("zeros", "anderson", i, **{"deq.tol": tol}),
                    [metrics(0.9, 10 - i / 2, 1.0)], "completed")
    trials = load(tmp_path / "tpe").trials
    with pytest.raises(ValueError, match=r"tol has 10 distinct values .*: group it in bins, e\.g\. --by tol:4"):
        export.aggregate(trials, ["tol"], ["nfe_fwd"])
    # log-spaced edges 1e-4, 8.9e-4, 8e-3: six values below 8.9e-4, four above
    table = export.aggregate(trials, ["tol:2"], ["nfe_fwd"])
    assert table.frame["tol"].tolist() == ["[0.0001, 0.00089)", "[0.00089, 0.008]"]
    assert table.frame["n"].tolist() == [6, 4]
    assert table.frame["nfe_fwd_mean"].tolist() == pytest.approx([np.mean(10 - np.arange(6) / 2),
                                                                  np.mean(10 - np.arange(6, 10) / 2)])
    assert "Tolerance grouped in bins." in export.render(table, "markdown")
    with pytest.raises(ValueError, match="bin count in 'tol:x' must be an integer from 2 to 20"):
        export.aggregate(trials, ["tol:x"], ["nfe_fwd"])


def test_pooling_studies_warns_and_study_group_keeps_them_apart(tmp_path, capsys):
    comparison_study(tmp_path, "two")
    for seed in (0, 1):
        write_trial(tmp_path, "three", f"z{seed}", params("zeros", "anderson", seed, epochs=3),
                    [metrics(0.95, 8.0, 1.0)] * 3, "completed")
    trials = load([str(tmp_path / "two"), str(tmp_path / "three")]).trials
    pooled = export.aggregate(trials, BY, ["test_acc"])
    assert pooled.warnings == ("rows pool 2 studies (three, two) trained for different epochs (2, 3); "
                               "add `study` to --by to keep them apart",)
    apart = export.aggregate(trials, ["study", *BY], ["test_acc"])
    assert apart.warnings == () and apart.frame["study"].tolist()[:1] == ["three"]
    assert main(["export", str(tmp_path)]) == 0
    assert "warning: rows pool 2 studies" in capsys.readouterr().err


def test_bootstrap_interval_paired_by_seed_and_unpaired(tmp_path):
    # paired, two seeds: resampling {0, 1} gives only (2.0/1.0), (2.2/1.2) and (4.2/2.2): the interval's ends
    base = pd.DataFrame({"t": [2.0, 2.2], "_seed": [0, 1]})
    row = pd.DataFrame({"t": [1.0, 1.2], "_seed": [0, 1]})
    r, (lo, hi), paired = ratio_interval(base, row, "t", "min", np.random.default_rng(0))
    assert paired and r == pytest.approx(2.1 / 1.1) and (lo, hi) == pytest.approx((2.2 / 1.2, 2.0))
    # other seeds: each side resampled alone, so the extremes mix (2.0/1.2 .. 2.2/1.0) are reachable
    r, (lo, hi), paired = ratio_interval(base, row.assign(_seed=[5, 6]), "t", "min",
                                                np.random.default_rng(0))
    assert not paired and 2.0 / 1.2 <= lo < r < hi <= 2.2 / 1.0 and hi - lo > 2.0 - 2.2 / 1.2
    # one trial a side: no interval
    assert math.isnan(ratio_interval(base[:1], row, "t", "min", np.random.default_rng(0))[1][0])


def test_the_readme_three_seed_table_comes_from_the_committed_study(capsys):
    """README section 7 quotes `deqlab export` of the committed three-seed study: every column, mean and sd."""
    import csv
    import io
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    study = root / "docs" / "results" / "skipdeq_mnist_paper"
    assert main(["export", str(study), "--by", "init,jac_weight",
                 "--metrics", "test_acc,nfe_fwd_paper,nfe_fwd,nfe_train_total",
                 "--baseline", "init=zeros", "--ratio-of", "nfe_fwd_paper", "--format", "csv"]) == 0
    rows = {(r["init"], float(r["jac_weight"])): r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert len(rows) == 6 and {r["n"] for r in rows.values()} == {"3"}
    section = re.search(r"## 7\..*?## 8\.", (root / "README.md").read_text(), re.S).group(0)
    names = {"zeros": "DEQ", "skip": "SkipDEQ", "skipreg": "SkipRegDEQ"}
    ratio = "nfe_fwd_paper_reduction_vs_init=zeros"
    for (init, jac), r in rows.items():
        line, = [l for l in section.splitlines()  # the accuracy/NFE table, not the speed-up one
                 if l.startswith(f"| {names[init]} | {'yes' if jac else 'no'} | ") and l.count("|") == 8]
        cells = [c.strip() for c in line.strip("|").split("|")]
        acc, paper, ours, train = (re.match(r"([\d.]+) \+- ([\d.]+)", c).groups() for c in cells[2:6])
        assert (float(acc[0]), float(acc[1])) == (round(float(r["test_acc_pct_mean"]), 2),
                                                  round(float(r["test_acc_pct_std"]), 2)), line
        assert (float(paper[0]), float(paper[1])) == (round(float(r["nfe_fwd_paper_mean"]), 2),
                                                      round(float(r["nfe_fwd_paper_std"]), 2)), line
        assert (float(ours[0]), float(ours[1])) == (round(float(r["nfe_fwd_mean"]), 2),
                                                    round(float(r["nfe_fwd_std"]), 2)), line
        assert (float(train[0]), float(train[1])) == (round(float(r["nfe_train_total_mean"]), 1),
                                                      round(float(r["nfe_train_total_std"]), 1)), line
        if init != "zeros":
            got = re.match(r"([\d.]+)x \[([\d.]+), ([\d.]+)\]", cells[6]).groups()
            want = (r[ratio], r[f"{ratio}_ci_low"], r[f"{ratio}_ci_high"])
            assert [float(g) for g in got] == [round(float(w), 2) for w in want], line


def test_the_levers_table_in_the_docs_comes_from_the_committed_study(capsys):
    """docs/reproductions.md's levers table quotes `deqlab export` of the committed deq_levers study."""
    import csv
    import io
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert main(["export", str(root / "docs" / "results" / "deq_levers"), "--by", "reuse,backward",
                 "--metrics", "test_acc,nfe_train_total,train_nfe_fwd,nfe_fwd,peak_mem_bytes",
                 "--baseline", "reuse=none", "--ratio-of", "nfe_train_total", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 8 and {r["n"] for r in rows} == {"3"}
    doc = (root / "docs" / "reproductions.md").read_text()
    section = doc[doc.index("#### The DEQ speed levers on MNIST"):]
    for r in rows:
        line, = [l for l in section.splitlines() if l.startswith(f"| {r['reuse']} | {r['backward']} | ")
                 and l.count("|") == 10]
        cells = [c.strip() for c in line.strip("|").split("|")]
        pairs = [re.match(r"([\d.]+) \+- ([\d.]+)", c).groups() for c in (cells[2], cells[3], cells[4], cells[6])]
        for (mean, sd), name, places in zip(pairs, ("test_acc_pct", "nfe_train_total", "train_nfe_fwd", "nfe_fwd"),
                                            (2, 2, 2, 2)):
            assert (float(mean), float(sd)) == (round(float(r[f"{name}_mean"]), places),
                                                round(float(r[f"{name}_std"]), places)), line
        mem = re.match(r"(\d+) \+- (\d+)", cells[7]).groups()
        assert [int(m) for m in mem] == [round(float(r["peak_mem_bytes_MiB_mean"])),
                                         round(float(r["peak_mem_bytes_MiB_std"]))], line
        if r["reuse"] == "epoch":
            ratio = "nfe_train_total_reduction_vs_reuse=none"
            got = re.match(r"([\d.]+)x \[([\d.]+), ([\d.]+)\]", cells[8]).groups()
            assert [float(g) for g in got] == [round(float(r[k]), 2) for k in
                                               (ratio, f"{ratio}_ci_low", f"{ratio}_ci_high")], line


def test_the_readme_reproduction_table_comes_from_the_committed_study(capsys):
    """docs/reproductions.md's seed-6171 table quotes `deqlab export` of that committed study: the same numbers."""
    import csv
    import io
    from pathlib import Path

    study = Path(__file__).resolve().parent.parent / "docs" / "results" / "skipdeq_mnist_paper_seed6171"
    assert main(["export", str(study), "--by", "init,jac_weight", "--metrics", "test_acc,nfe_fwd,nfe_fwd_paper",
                 "--baseline", "init=zeros", "--ratio-of", "nfe_fwd_paper", "--format", "csv"]) == 0
    rows = {(r["init"], r["jac_weight"]): r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert len(rows) == 6
    ratio = "nfe_fwd_paper_reduction_vs_init=zeros"
    deq, skip, skipreg = rows[("zeros", "0")], rows[("skip", "0")], rows[("skipreg", "0")]
    assert float(deq["nfe_fwd_paper_mean"]) == pytest.approx(16.79, abs=0.005)
    assert float(skip["nfe_fwd_paper_mean"]) == pytest.approx(4.32, abs=0.005)
    assert float(skipreg["nfe_fwd_paper_mean"]) == pytest.approx(3.00, abs=0.005)
    assert float(deq["test_acc_pct_mean"]) == pytest.approx(98.14, abs=0.005)
    assert float(skip[ratio]) == pytest.approx(3.88, abs=0.005)
    assert float(skipreg[ratio]) == pytest.approx(5.60, abs=0.005)
    assert float(rows[("zeros", "1")]["nfe_fwd_paper_mean"]) == pytest.approx(6.00, abs=0.005)
