"""One catalogue of metrics and statuses: every metric the training loop reports is in it, and the export and
the dashboard take their labels, units and directions from it (not from names typed by hand)."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deqlab.report import figures as figs
from deqlab.report import tables as export
from deqlab.report import views as dd
from deqlab.results import (CATALOGUE, FINAL_STATUSES, METRICS, OBJECTIVE_METRICS, STATUSES, Metric, Status,
                            TrialWriter, load)
from deqlab.results.schema import NOT_METRICS

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"

from deqlab.run import TrainConfig, train


def test_every_metric_the_training_loop_reports_is_in_the_catalogue(tmp_path):
    config = TrainConfig(epochs=1, seed=0, data={"batch_size": 64},
                         model={"name": "mlp", "options": {"width": 16, "inner": 32}},
                         deq={"init": "zeros", "solver": "anderson", "tol": 1e-2})
    writer = TrialWriter(str(tmp_path), "schema", "t0", config.flat_params(), {"seed": 0})
    result = train(config, writer=writer)
    assert result.status == Status.COMPLETED
    reported = set(result.history[0])
    numbers = {k for k, v in result.history[0].items() if isinstance(v, (int, float))}
    assert numbers - set(CATALOGUE) == set(), "a metric the loop reports has no catalogue entry"
    assert reported - numbers <= NOT_METRICS  # `phase`: text, not a metric
    # every metric marked every_row is reported every epoch: a study may optimise any of them
    assert set(METRICS) <= numbers and set(OBJECTIVE_METRICS) == set(METRICS)
    assert {"train_nfe_fwd", "nfe_jac", "nfe_train_total", "nfe_test_total", "nfe_fwd_paper"} <= set(METRICS)
    rows = load(str(tmp_path / "schema")).trials
    assert set(METRICS) <= set(rows.columns) and rows["status"].tolist() == ["completed"]
    for name in METRICS:
        assert pd.api.types.is_float_dtype(rows[name]), name


def test_statuses_are_one_enum():
    assert STATUSES == ("running", "completed", "pruned", "diverged", "failed") == tuple(s.value for s in Status)
    assert FINAL_STATUSES == tuple(s for s in STATUSES if s != "running")
    assert {"completed": 1}[Status.COMPLETED] == 1 and f"{Status.FAILED}" == "failed"
    writer = TrialWriter("/tmp", "s", "t", {}, {})
    with pytest.raises(ValueError, match="unknown status 'done'"):
        writer.add_epoch(0, {}, "done")


def test_schema_imports_neither_torch_nor_pandas():
    code = ("import sys; from deqlab.results import OBJECTIVE_METRICS, check_name, Status; "
            "import deqlab.results.schema; print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _trials() -> pd.DataFrame:
    rows = [{"study": "s", "trial_id": f"t{i}", "epoch": 0, "status": "completed", "param.deq.init": init,
             "seed": i, "test_acc": acc, "epoch_time_s": 2.0} for i, (init, acc) in
            enumerate([("zeros", 0.9), ("zeros", 0.92), ("skip", 0.95), ("skip", 0.96)])]
    return pd.DataFrame(rows)


def test_export_and_dashboard_take_labels_units_and_directions_from_the_catalogue(monkeypatch):
    monkeypatch.setitem(CATALOGUE, "test_acc", Metric("test_acc", "Held-out accuracy", "%", 100.0, "max"))
    monkeypatch.setitem(CATALOGUE, "epoch_time_s", Metric("epoch_time_s", "Seconds per epoch", "s", 1.0, "min"))
    table = export.aggregate(_trials(), ["init"], ["test_acc", "epoch_time_s"])
    assert table.info["test_acc"] is CATALOGUE["test_acc"]
    text = export.render(table, "markdown")
    assert "Held-out accuracy (%) ↑" in text and "Seconds per epoch (s) ↓" in text
    assert "95.5" in text  # scaled by the catalogue's 100
    assert figs.axis_title("test_acc") == "Held-out accuracy (%)"
    assert figs.in_display_units(_trials())["test_acc"].tolist() == pytest.approx([90, 92, 95, 96])


def test_the_dashboard_types_no_metric_name_the_catalogue_has():
    """Page code picks metrics through deqlab.report.views' defaults, which must all be catalogue entries."""
    for name in (dd.HEADLINE_METRIC, *dd.DEFAULT_OBJECTIVES, *dd.DEFAULT_X, *dd.DEFAULT_Y, *dd.CURVE_METRICS,
                 *dd.EXPORT_METRICS, *dd.RATIO_METRICS):
        assert name in CATALOGUE, name
    for page in DASHBOARD.glob("*.py"):
        literals = set(re.findall(r"[\"']([a-z_]+)[\"']", page.read_text()))
        assert literals & set(CATALOGUE) == set(), f"{page.name} types metric names by hand"
        assert '"://" in' not in page.read_text(), f"{page.name} tests for URIs itself (use deqlab.results.is_uri)"
