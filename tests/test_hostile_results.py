"""Odd or hostile results files never crash a reader: each is skipped with a warning naming it, the rest load.

A list-valued hyperparameter, missing key columns, a text metric, and a file damaged in place after a
compaction with its size and mtime put back; `deqlab export` and every dashboard page over them.
"""

import os
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deqlab.cli import build_parser, dashboard_command, main
from deqlab.results import compact, load
from study_factory import comparison_study

sys.path.insert(0, str(Path(__file__).parent))

GOOD = {"study": ["cmp"], "trial_id": ["odd"], "epoch": [0], "status": ["completed"], "test_acc": [0.5],
        "nfe_fwd": [3.0], "epoch_time_s": [1.0], "param.deq.init": ["zeros"], "param.deq.solver": ["anderson"]}
HOSTILE = {
    "list-param": {**GOOD, "param.deq.solver_options.m": [[1, 2]]},
    "no-keys": {k: v for k, v in GOOD.items() if k not in ("study", "trial_id")},
    "text-metric": {**GOOD, "test_acc": ["high"]},
}


def hostile_study(root, kind) -> Path:
    path = comparison_study(root)
    pq.write_table(pa.table(HOSTILE[kind]), path / "trials" / f"{kind}.parquet")
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_load_skips_the_file_with_a_warning_naming_it(kind, tmp_path):
    path = hostile_study(tmp_path, kind)
    with pytest.warns(UserWarning, match=f"{kind}.parquet"):
        res = load(path)
    assert len(res.skipped) == 1 and f"{kind}.parquet" in res.skipped[0]
    assert res.trials.trial_id.nunique() == 10  # the comparison study's own trials, all of them


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_export_skips_it_and_prints_the_table(kind, tmp_path, capsys):
    path = hostile_study(tmp_path, kind)
    assert main(["export", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: skipped unreadable results file {path}/trials/{kind}.parquet" in err
    assert "DEQ" in out and "Anderson" in out and "Traceback" not in err


def test_a_file_damaged_in_place_after_compaction_is_not_served_from_the_snapshot(tmp_path):
    path = comparison_study(tmp_path)
    compact(path)
    victim = path / "trials" / "skip-anderson-0.parquet"
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[8:40] = b"\xff" * 32  # same size, garbage where the first column's pages are
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.warns(UserWarning, match="skip-anderson-0.parquet"):
        res = load(path)
    assert [s for s in res.skipped if "skip-anderson-0.parquet" in s]
    assert "skip-anderson-0" not in set(res.trials.trial_id) and res.trials.trial_id.nunique() == 9
    with warnings.catch_warnings():  # an untouched study still loads from its snapshot, silently
        warnings.simplefilter("error")
        other = comparison_study(tmp_path / "other")
        compact(other)
        assert load(other).skipped == []


def test_every_dashboard_page_renders_over_hostile_files(tmp_path, monkeypatch):
    from test_dashboard import PAGES, _app

    for kind in HOSTILE:
        pq.write_table(pa.table(HOSTILE[kind]), comparison_study(tmp_path) / "trials" / f"{kind}.parquet")
    at = _app(monkeypatch, tmp_path / "cmp")
    at.run()
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, page


def test_dashboard_hides_server_error_details_from_the_browser(tmp_path):
    path = comparison_study(tmp_path)
    argv, _ = dashboard_command(build_parser().parse_args(["dashboard", str(path)]))
    assert "--client.showErrorDetails none" in " ".join(argv)
