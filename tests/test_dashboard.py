"""The dashboard: its data shaping, every page under AppTest (normal, empty, running-only, corrupt), and a real browser.

The browser test drives Debian's chromium with Playwright against `deqlab
dashboard` on a free localhost port. It runs in CI (`.ci/run` installs
chromium): there a missing browser is a failure, elsewhere a skip.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest
from system_tools import skip_or_fail_without, stop
from study_factory import add_depth_states, comparison_study, metrics, params, write_trial

import deqlab.results.store as results_module
from deqlab.report import views as dd
from deqlab.report import figures as figs
from deqlab.report import tables as export
from deqlab.cli import build_parser, dashboard_command, main
from deqlab.results import TableCache, load, load_spec, load_states, load_trial_traces

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
PAGES = ("Overview", "Compare", "Search", "Trial detail", "Depth view", "Export")
FRONT = "Pareto front"  # the scatter's front overlay, not a trial
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    path = comparison_study(root)
    add_depth_states(root, "cmp", "skip-anderson-0")
    return path


# --------------------------------------------------------------------------- data shaping


def test_pareto_mask_keeps_only_undominated_points():
    frame = pd.DataFrame({"t": [1.0, 2.0, 2.0, 3.0, 0.5, 4.0, np.nan, 1.0],
                          "acc": [0.80, 0.90, 0.85, 0.90, 0.60, 0.95, 0.99, 0.80]})
    # (1, .8) and its duplicate, (2, .9), (0.5, .6), (4, .95) are on the front; (2, .85) and (3, .9) are beaten
    assert dd.pareto_mask(frame, "t", "acc", "min", "max").tolist() == [True, True, False, False, True, True, False,
                                                                         True]
    # both minimised: only the fastest-and-worst corner survives
    assert dd.pareto_mask(frame, "t", "acc", "min", "min").tolist() == [False] * 4 + [True] + [False] * 3
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        dd.pareto_mask(frame, "t", "acc", "min", "best")


def test_filters_lists_for_few_values_ranges_for_many():
    summary = pd.DataFrame({"param.deq.init": ["zeros", "skip"] * 10, "param.optim.lr": np.geomspace(1e-4, 1e-2, 20),
                            "param.seed": [0] * 20, "status": ["completed"] * 19 + ["running"]})
    choices, ranges = dd.filter_options(summary)
    assert choices == {"param.deq.init": ["skip", "zeros"]} and list(ranges) == ["param.optim.lr"]
    assert ranges["param.optim.lr"] == pytest.approx((1e-4, 1e-2))
    out = dd.apply_filters(summary, {"param.deq.init": ["zeros"]}, ["completed"], {"param.optim.lr": (0, 1e-3)})
    assert len(out) == 5 and set(out["param.deq.init"]) == {"zeros"} and out["param.optim.lr"].max() <= 1e-3


def test_study_dirs_expand_a_results_root(study, tmp_path):
    assert dd.study_dirs([str(study.parent)]) == [str(study)]
    assert dd.study_dirs([str(study)]) == [str(study)]
    assert dd.study_dirs([str(tmp_path)]) == [str(tmp_path)]  # empty: kept, so the page can say so


def test_signature_changes_when_a_results_file_is_replaced(tmp_path):
    write_trial(tmp_path, "s", "a", params("zeros", "anderson", 0), [metrics(0.5, 9, 1)], "running")
    first = dd.signature([str(tmp_path / "s")])
    assert dd.signature([str(tmp_path / "s")]) == first
    time.sleep(0.01)
    write_trial(tmp_path, "s", "a", params("zeros", "anderson", 0), [metrics(0.5, 9, 1)] * 2, "completed")
    assert dd.signature([str(tmp_path / "s")]) != first


def test_load_skips_corrupt_and_temp_files_and_cache_rereads_only_changes(tmp_path, monkeypatch):
    for i in range(3):
        write_trial(tmp_path, "s", f"t{i}", params("zeros", "anderson", i), [metrics(0.5 + i / 10, 9, 1)], "completed")
    (tmp_path / "s" / "trials" / "bad.parquet").write_bytes(b"PAR1 torn")
    (tmp_path / "s" / "trials" / ".t9.parquet.abc.tmp").write_bytes(b"in progress")
    reads = []
    real = results_module.read_table
    monkeypatch.setattr(results_module, "read_table", lambda fs, path: reads.append(Path(path).name) or real(fs, path))
    cache = TableCache()
    with pytest.warns(UserWarning, match="skipping unreadable results file .*bad.parquet"):
        res = load(tmp_path / "s", cache=cache)
    assert sorted(res.trials["trial_id"]) == ["t0", "t1", "t2"] and len(res.skipped) == 1
    assert len(res.traces) == 3 * (6 + 4)
    time.sleep(0.01)
    write_trial(tmp_path, "s", "t1", params("zeros", "anderson", 1), [metrics(0.7, 9, 1)] * 2, "completed")
    reads.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load(tmp_path / "s", traces=False, cache=cache)
    assert sorted(reads) == ["bad.parquet", "t1.parquet"]  # the unchanged trials come from the cache
    assert (again.trials["trial_id"] == "t1").sum() == 2 and again.traces.empty


def test_load_merges_trials_whose_columns_differ(tmp_path):
    write_trial(tmp_path, "s", "a", params("zeros", "anderson", 0, **{"deq.max_iter": 30}), [metrics(0.5, 9, 1)],
                "completed")
    write_trial(tmp_path, "s", "b", params("zeros", "anderson", 1, **{"deq.max_iter": "auto", "extra": 1.5}),
                [metrics(0.6, 9, 1)], "completed")
    trials = load(tmp_path / "s").trials.sort_values("trial_id")
    assert trials["param.deq.max_iter"].tolist() == [30, "auto"]
    assert trials["param.extra"].isna().tolist() == [True, False]


def test_per_trial_readers(study, tmp_path):
    traces = load_trial_traces(study, "skip-anderson-0")
    assert sorted(traces["phase"].unique()) == ["bwd", "fwd"] and traces["epoch"].nunique() == 2
    assert load_trial_traces(study, "nope").empty
    assert load_states(study, "zeros-anderson-0") is None
    assert load_spec(study)["objectives"][0] == {"metric": "test_acc", "mode": "max"}
    assert load_spec(tmp_path) == {}
    (tmp_path / "study.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="unreadable study spec .*study.yaml: expected a mapping"):
        load_spec(tmp_path)
    with pytest.raises(ValueError, match="invalid trial name"):
        load_states(study, "../x")


def test_pca_states_shows_classes_separating_over_depth(study):
    proj, ratio = dd.pca_states(load_states(study, "skip-anderson-0"))
    assert sorted(proj["step"].unique()) == [0, 1, 2, 3] and len(proj) == 4 * 12
    assert 0.5 < ratio[0] <= 1 and ratio[0] + ratio[1] <= 1 + 1e-9

    def separation(k):  # spread of class means over mean within-class spread, in the projection
        part = proj[proj["step"] == k]
        centres = part.groupby("label")[["pc1", "pc2"]].mean()
        within = part.groupby("label")[["pc1", "pc2"]].std().mean().mean()
        return centres.std().mean() / within

    assert separation(0) < 1 < separation(3)
    with pytest.raises(ValueError, match="no depth states"):
        dd.pca_states(pd.DataFrame())


def test_best_trials_per_objective(study):
    summary = export.final_epochs(load(study).trials, statuses=None)
    best = dd.best_trials(summary, {"test_acc": "max", "epoch_time_s": "min"}, n=2)
    assert best["trial_id"].tolist() == ["skip-anderson-0", "skip-anderson-1", "skip-anderson-0", "skip-anderson-1"]
    assert best["value"].tolist() == pytest.approx([0.95, 0.93, 1.0, 1.2])  # running/failed trials excluded


# --------------------------------------------------------------------------- every page under AppTest


def test_timeline_spans_each_trial_from_its_start_over_its_epochs():
    from deqlab.report.figures import timeline_figure

    summary = pd.DataFrame({
        "study": ["s", "s", "s"], "trial_id": ["a", "b", "never"], "status": ["completed", "pruned", "failed"],
        "started_at": ["2026-12-01T10:00:00+0000", "2026-12-01T10:00:30+0000", None],
        "total_time_s": [90.0, 15.5, None],
    })
    spans = dd.timeline(summary)
    assert list(spans["trial_id"]) == ["a", "b"]  # a trial that never trained has no bar
    assert (spans["finish"] - spans["start"]).dt.total_seconds().tolist() == [90.0, 15.5]
    assert spans["start"].iloc[1] == pd.Timestamp("2026-12-01T10:00:30Z")
    fig = timeline_figure(spans)
    colours = {t.name: t.marker.color for t in fig.data}
    assert colours == {"completed": figs.STATUS_COLOURS["completed"], "pruned": figs.STATUS_COLOURS["pruned"]}
    assert fig.layout.xaxis.title.text == "Wall-clock time (UTC)"
    assert dd.timeline(summary.drop(columns=["started_at"])).empty


def _app(monkeypatch, *dirs):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("DEQLAB_DASHBOARD_DIRS", os.pathsep.join(str(d) for d in dirs))
    return AppTest.from_file(APP, default_timeout=60)


def _visit_all(at):
    """Render every page; return {page: (warnings, infos)}; any exception fails the test."""
    seen = {}
    at.run()
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, f"{page}: {[e.value for e in at.exception]}"
        seen[page] = ([w.value for w in at.warning], [i.value for i in at.info])
    return seen


def _points(chart) -> dict:
    """Points per trace of a rendered plotly chart (plotly sends arrays base64-encoded)."""
    fig = pio.from_json(chart.proto.spec)
    out = {}
    for trace in fig.data:
        x = trace.x
        n = len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize if isinstance(x, dict) else len(x)
        out[trace.name] = out.get(trace.name, 0) + n
    return out


def test_every_page_renders_on_a_study(study, monkeypatch):
    at = _app(monkeypatch, study.parent)
    seen = _visit_all(at)
    assert all(not w for w, _ in seen.values())
    assert seen["Depth view"][1] == []  # the trial with states is found: no "nothing recorded" note

    at.sidebar.radio(key="page").set_value("Compare").run()
    counts = _points(at.get("plotly_chart")[0])
    assert counts.pop(FRONT) >= 1
    assert sum(counts.values()) == 10  # 8 completed + running + failed, one point each
    at.sidebar.multiselect(key="filter:param.deq.init").set_value(["zeros"]).run()
    counts = _points(at.get("plotly_chart")[0])
    counts.pop(FRONT)
    assert sum(counts.values()) == 5
    assert at.selectbox(key="cmp_colour").value == "param.deq.init"  # the colour choice survives the filter

    at.sidebar.multiselect(key="filter:param.deq.init").set_value(["skip", "zeros"]).run()
    at.sidebar.multiselect(key="filter:status").set_value(["completed"]).run()
    at.sidebar.radio(key="page").set_value("Export").run()
    at.radio(key="exp_fmt").set_value("markdown").run()
    table = export.aggregate(load(study).trials, ["deq.init", "deq.solver"], ["test_acc", "epoch_time_s", "nfe_fwd"],
                             modes=export.objective_modes([load_spec(study)]))
    assert at.code[0].value == export.render(table, "markdown").rstrip("\n")
    at.selectbox(key="exp_base_col").set_value("deq.init").run()
    at.selectbox(key="exp_base_value").set_value("zeros").run()
    assert "Speedup vs DEQ" in at.code[0].value and "| 1.91× [1.83, 2.00] |" in at.code[0].value

    at.sidebar.radio(key="page").set_value("Trial detail").run()
    at.selectbox(key="trial_pick").set_value(("cmp", "skip-anderson-0")).run()
    curves = _points(at.get("plotly_chart")[0])
    assert curves["Test acc."] == 2 and curves["NFE bwd"] == 2  # the catalogue's labels


def _array(values) -> np.ndarray:
    """A plotly array, decoded when sent base64-encoded."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values, dtype=float)


def _figures(at) -> list:
    return [pio.from_json(chart.proto.spec) for chart in at.get("plotly_chart")]


def _colours(fig) -> dict:
    out = {}
    for t in fig.data:
        colour = (t.marker.color if t.type in ("scatter", "box") and isinstance(t.marker.color, str) else None) \
            or (t.line.color if hasattr(t, "line") and t.line is not None else None)
        if t.name and colour:
            out.setdefault(t.name.split(" (")[0], set()).add(colour)
    return out


def test_one_colour_per_value_units_on_axes_and_optuna_views(study, monkeypatch):
    at = _app(monkeypatch, study.parent)
    at.run()
    at.sidebar.radio(key="page").set_value("Compare").run()
    assert not at.exception
    figures = _figures(at)
    scatter, box, curves = figures[:3]
    # NFE on x by default (the objectives' axis); titles carry units; accuracy in percent
    assert scatter.layout.xaxis.title.text == "NFE fwd" and scatter.layout.yaxis.title.text == "Test acc. (%)"
    ys = np.concatenate([_array(t.y) for t in scatter.data if t.name != FRONT])
    assert 88 <= min(ys) and max(ys) <= 99
    # the same init value has one colour in the scatter, the grouped plot and the learning curves
    seen = {}
    for fig in (scatter, box, curves):
        for name, colours in _colours(fig).items():
            seen.setdefault(name, set()).update(colours)
    assert {"DEQ", "SkipDEQ"} <= set(seen) and all(len(c) == 1 for n, c in seen.items() if n in ("DEQ", "SkipDEQ"))
    assert seen["DEQ"] != seen["SkipDEQ"]
    assert curves.layout.xaxis.dtick == 1 and curves.layout.yaxis.title.text == "Test acc. (%)"
    # the baseline comparison: speed-up against DEQ with its bootstrap interval
    ci = figures[-1]
    assert ci.layout.xaxis.title.text == "Speedup vs DEQ (×, 95% bootstrap interval over seeds)"
    assert list(ci.data[0].y[:2]) == ["SkipDEQ / Anderson", "SkipDEQ / Broyden"]
    assert _array(ci.data[0].x)[:2] == pytest.approx([2.1 / 1.1, 3.2 / 1.6])
    # Optuna's own views of the same trials, on the Search page
    at.sidebar.radio(key="page").set_value("Search").run()
    assert not at.exception
    figures = _figures(at)
    titles = [f.layout.title.text for f in figures]
    assert {"Parallel Coordinate Plot", "Hyperparameter Importances", "Slice Plot"} <= set(titles)
    slice_plot = figures[titles.index("Slice Plot")]
    assert slice_plot.layout.yaxis.title.text == "Test acc. (%)"


def test_trial_detail_labels_ticks_and_tolerance(study, monkeypatch):
    at = _app(monkeypatch, study.parent)
    at.run()
    at.sidebar.radio(key="page").set_value("Trial detail").run()
    pick = at.selectbox(key="trial_pick")
    assert pick.format_func(("cmp", "skip-anderson-0")) == "cmp / skip-anderson-0: SkipDEQ Anderson tol 0.001 (completed)"
    pick.set_value(("cmp", "skip-anderson-0")).run()
    curves, traces = _figures(at)[:2]
    assert curves.layout.xaxis.dtick == 1 and curves.layout.yaxis.title.text == "Test acc. (%)"  # the catalogue's
    assert [s.y0 for s in traces.layout.shapes] == [1e-3]  # the trial's tolerance, drawn on the residuals
    params = {r["name"]: r["value"] for r in at.dataframe[0].value.to_dict("records")}
    assert params["seed"] == "0" and params["deq.init"] == "SkipDEQ"
    # files written by hand hold no checkpoint: the page says so and offers no command (test_bench_cli: one that has)
    assert any(i.value.startswith("No checkpoint of this trial") for i in at.info) and not at.code


def test_range_filter_stops_are_log_spaced_and_filter():
    stops = dd.range_steps(1.2e-4, 8e-3)
    assert stops[0] == 1.2e-4 and stops[-1] == 8e-3 and len(stops) == 41
    ratios = np.diff(np.log10(stops[1:-1]))
    assert np.allclose(ratios, ratios[0], atol=0.01)  # as many stops per decade
    frame = pd.DataFrame({"param.deq.tol": [1.2e-4, 5e-4, 2e-3, 8e-3]})
    low = next(s for s in stops if s >= 4e-4)
    assert dd.apply_filters(frame, {}, ranges={"param.deq.tol": (low, stops[-1])})["param.deq.tol"].tolist() == [
        5e-4, 2e-3, 8e-3]
    assert "param.epochs" not in dd.filter_options(pd.DataFrame({"param.epochs": [2, 3], "param.x": [1, 2]}))[0]
    # seven sampled tolerances are a range, seven seeds a list
    choices, ranges = dd.filter_options(pd.DataFrame({"param.deq.tol": np.geomspace(1e-4, 1e-2, 7),
                                                      "param.seed": np.arange(7)}))
    assert list(ranges) == ["param.deq.tol"] and list(choices) == ["param.seed"]


def test_pages_render_an_empty_directory(tmp_path, monkeypatch):
    seen = _visit_all(_app(monkeypatch, tmp_path))
    assert any("No trial files yet" in i for i in seen["Overview"][1])
    for page in PAGES[1:]:
        assert seen[page][1], page  # each says there is nothing to show


def test_pages_render_a_study_with_only_running_trials(tmp_path, monkeypatch):
    for i, init in enumerate(("zeros", "skip")):
        write_trial(tmp_path, "live", f"t{i}", params(init, "anderson", i), [metrics(0.5, 9, 1)], "running")
    at = _app(monkeypatch, tmp_path / "live")
    seen = _visit_all(at)
    assert any("No completed trials yet" in i for i in seen["Overview"][1])
    assert any("no completed trials to aggregate (found: 2 running)" in w for w in seen["Export"][0])


def test_pages_warn_about_unreadable_files_and_show_the_rest(study, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "cmp"
    shutil.copytree(study, copy)
    (copy / "trials" / "torn.parquet").write_bytes(b"PAR1 garbage")
    (copy / "traces" / "skip-anderson-0.parquet").write_bytes(b"garbage")
    (copy / "study.yaml").write_text("objectives: [\n")
    at = _app(monkeypatch, copy)
    seen = _visit_all(at)
    for page in PAGES:
        text = " ".join(seen[page][0])
        assert "torn.parquet" in text and "study.yaml" in text, page
    at.sidebar.radio(key="page").set_value("Trial detail").run()
    at.selectbox(key="trial_pick").set_value(("cmp", "skip-anderson-0")).run()
    assert any("skip-anderson-0.parquet" in w.value for w in at.warning)  # its traces file, named
    assert not at.exception


# --------------------------------------------------------------------------- the command


def test_dashboard_command_binds_localhost_headless(study):
    argv, env = dashboard_command(build_parser().parse_args(["dashboard", str(study.parent), "--port", "8600"]))
    joined = " ".join(argv)
    assert argv[:4] == [sys.executable, "-m", "streamlit", "run"] and argv[4].endswith("dashboard/app.py")
    assert "--server.headless true" in joined and "--server.address 127.0.0.1" in joined
    assert "--server.port 8600" in joined
    assert env["DEQLAB_DASHBOARD_DIRS"] == str(study)
    argv, _ = dashboard_command(build_parser().parse_args(["dashboard", str(study), "--host", "0.0.0.0"]))
    assert "--server.address 0.0.0.0" in " ".join(argv)


def test_dashboard_command_rejects_a_missing_directory(tmp_path, capsys):
    assert main(["dashboard", str(tmp_path / "nope")]) == 2
    assert "no such results directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real browser


def _browser_or_skip():
    try:
        import playwright.sync_api  # noqa: F401
        have_playwright = True
    except ImportError:
        have_playwright = False
    if os.path.exists(CHROMIUM) and have_playwright:
        return
    missing = "chromium (/usr/bin/chromium)" if not os.path.exists(CHROMIUM) else "the playwright package"
    skip_or_fail_without(missing, ".ci/run installs chromium; pip install -e '.[dev]' installs playwright")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"deqlab dashboard exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("dashboard did not become healthy in time")


SCATTER_POINTS = """() => {
    const g = document.querySelector('.js-plotly-plot');
    if (!g || !g._fullData) return -1;
    return g._fullData.filter(t => t.name !== 'Pareto front').reduce((s, t) => s + (t._length || 0), 0);
}"""
DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@pytest.mark.browser
def test_browser_compare_page_and_filter(study, tmp_path):
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deqlab", "dashboard", str(study), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"http://127.0.0.1:{port}/?page=Compare")
                page.wait_for_selector(DONE, timeout=60_000)
                page.wait_for_selector(".js-plotly-plot", timeout=30_000)
                page.wait_for_function(f"({SCATTER_POINTS})() > 0", timeout=30_000)
                assert page.evaluate(SCATTER_POINTS) == 10  # every trial, any status
                page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)

                sidebar = page.locator("[data-testid='stSidebar']")
                init_filter = sidebar.locator("[data-testid='stMultiSelect']").filter(has_text="Init")
                init_filter.get_by_role("button", name="Remove SkipDEQ").click()
                page.wait_for_function(f"({SCATTER_POINTS})() === 5", timeout=30_000)  # the zeros trials only
                page.wait_for_selector(DONE, timeout=30_000)
                assert page.evaluate(SCATTER_POINTS) == 5
                page.screenshot(path=str(tmp_path / "compare_filtered.png"), full_page=True)
            finally:
                browser.close()
        assert (tmp_path / "compare.png").stat().st_size > 10_000
    finally:
        stop(proc)


def test_tolerance_range_filter_filters_in_the_app(tmp_path, monkeypatch):
    tols = np.geomspace(1.2e-4, 8e-3, 8)  # a sampled log-uniform tolerance: a range filter, log-spaced stops
    for i, tol in enumerate(tols):
        write_trial(tmp_path, "tpe", f"t{i}", params("zeros", "anderson", i, **{"deq.tol": float(tol)}),
                    [metrics(0.9, 10.0, 1.0)], "completed")
    at = _app(monkeypatch, tmp_path / "tpe")
    at.run()
    at.sidebar.radio(key="page").set_value("Compare").run()
    slider = at.sidebar.select_slider(key="filter:param.deq.tol")
    assert slider.label == "Tolerance" and slider.value == (tols[0], tols[-1])
    low = next(s for s in slider.options if float(s) >= 1e-3)
    slider.set_value((float(low), float(tols[-1]))).run()
    counts = _points(at.get("plotly_chart")[0])
    counts.pop(FRONT, None)
    assert sum(counts.values()) == int((tols >= float(low)).sum()) == 4
