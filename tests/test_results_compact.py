"""Compaction snapshots: `compact` merges a study's per-trial files, `load` reads the snapshot plus what changed.

Every test compares a load through the snapshot with a load of the per-trial
files alone (the snapshot moved aside), on real files written by `TrialWriter`.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from study_factory import metrics, params, write_trial

import deqlab.results.store as results_module
from deqlab.results import StudyStore, TableCache, compact, finalize_trial, load, snapshot_path

TRACE_KEYS = ["study", "trial_id", "epoch", "phase", "step"]


def _study(root, n: int = 5) -> Path:
    for i in range(n):
        write_trial(root, "s", f"t{i}", params(["zeros", "skip"][i % 2], "anderson", i),
                    [metrics(0.5 + i / 20, 9 + i, 1 + i / 10) for _ in range(1 + i % 3)], "completed")
    finalize_trial(str(root), "s", "crashed", "failed", error="CUDA out of memory", params=params("zeros", "broyden", 9))
    return Path(root) / "s"


def _canon(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)[sorted(frame.columns)]


def _reference(study: Path, **kw):
    """What load returns from the per-trial files alone (the snapshot folder moved aside meanwhile)."""
    aside = study / ".compact-aside"
    moved = (study / "compact").exists()
    if moved:
        (study / "compact").rename(aside)
    try:
        return load(study, **kw)
    finally:
        if moved:
            aside.rename(study / "compact")


def _assert_same(study: Path, reads: list | None = None, **kw):
    """Load through the snapshot, check it against `_reference`; `reads` keeps only the snapshot load's opens."""
    got = load(study, **kw)
    opened = list(reads) if reads is not None else None
    want = _reference(study, **kw)
    if reads is not None:
        reads[:] = opened
    pd.testing.assert_frame_equal(_canon(got.trials, ["study", "trial_id", "epoch"]),
                                  _canon(want.trials, ["study", "trial_id", "epoch"]))
    if kw.get("traces", True):
        pd.testing.assert_frame_equal(_canon(got.traces, TRACE_KEYS), _canon(want.traces, TRACE_KEYS))
    return got


def _touch_later(path: Path) -> None:
    """Give a rewritten file an mtime the snapshot cannot have recorded (coarse clocks, fast tests)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.fixture
def reads(monkeypatch):
    """Names of the per-trial files `load` opens."""
    seen: list[str] = []
    real = results_module.read_table
    monkeypatch.setattr(results_module, "read_table",
                        lambda fs, path: seen.append("/".join(Path(path).parts[-2:])) or real(fs, path))
    return seen


def test_snapshot_load_equals_per_file_load_and_opens_no_trial_file(tmp_path, reads):
    study = _study(tmp_path)
    assert compact(study) == 6
    assert Path(snapshot_path(study, "trials")).is_file() and Path(snapshot_path(study, "traces")).is_file()
    assert len(list((study / "trials").iterdir())) == 6  # per-trial files are kept
    reads.clear()
    res = _assert_same(study, reads)
    assert reads == [] and res.skipped == []
    assert res.trials.loc[res.trials["trial_id"] == "crashed", "error"].tolist() == ["CUDA out of memory"]
    _assert_same(study, traces=False)


def test_rewritten_new_and_deleted_trials_after_compaction(tmp_path, reads):
    study = _study(tmp_path)
    compact(study)
    write_trial(tmp_path, "s", "t1", params("skip", "anderson", 1), [metrics(0.9, 5, 1)] * 4, "completed")
    _touch_later(study / "trials" / "t1.parquet")
    _touch_later(study / "traces" / "t1.parquet")
    write_trial(tmp_path, "s", "t9", params("skip", "broyden", 9), [metrics(0.8, 5, 1)], "running")
    (study / "trials" / "crashed.parquet").unlink()  # the only trial with an `error` column
    (study / "traces" / "t3.parquet").unlink()
    reads.clear()
    res = _assert_same(study, reads)
    assert sorted(reads) == ["traces/t1.parquet", "traces/t9.parquet", "trials/t1.parquet", "trials/t9.parquet"]
    trials = res.trials
    assert (trials["trial_id"] == "t1").sum() == 4 and trials.loc[trials["trial_id"] == "t1", "test_acc"].eq(0.9).all()
    assert (trials["trial_id"] == "t9").sum() == 1 and "crashed" not in set(trials["trial_id"])
    assert "error" not in trials.columns  # as without the snapshot: no remaining file has the column
    assert "t3" not in set(res.traces["trial_id"]) and "t3" in set(trials["trial_id"])


def test_compacting_again_reuses_the_snapshot_and_opens_only_changed_files(tmp_path, reads):
    study = _study(tmp_path)
    compact(study)
    write_trial(tmp_path, "s", "t2", params("zeros", "anderson", 2), [metrics(0.7, 5, 1)] * 5, "completed")
    _touch_later(study / "trials" / "t2.parquet")
    _touch_later(study / "traces" / "t2.parquet")
    (study / "trials" / "crashed.parquet").unlink()
    reads.clear()
    assert compact(study) == 5
    assert sorted(reads) == ["traces/t2.parquet", "trials/t2.parquet"]
    reads.clear()
    res = _assert_same(study, reads)
    assert reads == [] and (res.trials["trial_id"] == "t2").sum() == 5 and "error" not in res.trials.columns


def test_unreadable_snapshot_is_skipped_with_a_warning_naming_it(tmp_path):
    study = _study(tmp_path)
    compact(study)
    snap = Path(snapshot_path(study, "trials"))
    good = snap.read_bytes()
    foreign = pa.table({"trial_id": ["t0"], "epoch": [0]})  # a readable Parquet file that is not a snapshot
    table = pq.read_table(snap)
    short = table.slice(1)  # its manifest no longer matches its rows
    for broken in (b"PAR1 torn", good[: len(good) // 2], foreign, short):
        if isinstance(broken, pa.Table):
            pq.write_table(broken, snap)
        else:
            snap.write_bytes(broken)
        with pytest.warns(UserWarning, match=r"skipping unreadable results snapshot .*compact/trials\.parquet"):
            res = _assert_same(study)
        assert len(res.skipped) == 1 and "compact/trials.parquet" in res.skipped[0]
        assert sorted(res.trials["trial_id"].unique()) == ["crashed", "t0", "t1", "t2", "t3", "t4"]


def test_temp_and_corrupt_files_are_skipped_as_without_a_snapshot(tmp_path, reads):
    study = _study(tmp_path)
    (study / "trials" / ".t7.parquet.abc.tmp").write_bytes(b"in progress")
    (study / "compact").mkdir()
    (study / "compact" / ".trials.parquet.abc.tmp").write_bytes(b"in progress")
    (study / "trials" / "bad.parquet").write_bytes(b"PAR1 torn")
    with pytest.warns(UserWarning, match="skipping unreadable results file .*bad.parquet"):
        assert compact(study) == 6
    reads.clear()
    with pytest.warns(UserWarning, match="skipping unreadable results file .*bad.parquet"):
        res = load(study)
    assert reads == ["trials/bad.parquet"]  # not in the snapshot, so tried again and still skipped
    assert len(res.skipped) == 1 and "bad.parquet" in res.skipped[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(study)


def test_trials_whose_types_clash_stay_out_of_the_snapshot(tmp_path, reads):
    write_trial(tmp_path, "s", "a", params("zeros", "anderson", 0, **{"deq.max_iter": 30}), [metrics(0.5, 9, 1)] * 2,
                "completed")
    write_trial(tmp_path, "s", "b", params("zeros", "anderson", 1, **{"deq.max_iter": "auto", "extra": 1.5}),
                [metrics(0.6, 9, 1)], "completed")
    study = tmp_path / "s"
    assert compact(study) == 1  # "auto" cannot share a column type with 30: trial b is read from its file
    reads.clear()
    trials = _assert_same(study, reads).trials.drop_duplicates("trial_id").sort_values("trial_id")
    assert reads == ["trials/b.parquet"]
    assert trials["param.deq.max_iter"].tolist() == [30, "auto"] and trials["param.extra"].isna().tolist() == [True,
                                                                                                                False]


def test_table_cache_on_top_of_a_snapshot(tmp_path, reads):
    study = _study(tmp_path)
    compact(study)
    cache = TableCache()
    load(study, traces=False, cache=cache)
    reads.clear()
    write_trial(tmp_path, "s", "t0", params("zeros", "anderson", 0), [metrics(0.6, 9, 1)] * 3, "completed")
    _touch_later(study / "trials" / "t0.parquet")
    again = load(study, traces=False, cache=cache)
    assert reads == ["trials/t0.parquet"] and (again.trials["trial_id"] == "t0").sum() == 3
    reads.clear()
    load(study, traces=False, cache=cache)
    assert reads == []
    time.sleep(0.01)
    compact(study)  # a new snapshot replaces the cached one
    reads.clear()
    assert_same_cached = load(study, traces=False, cache=cache)
    assert reads == [] and (assert_same_cached.trials["trial_id"] == "t0").sum() == 3
    Path(snapshot_path(study, "trials")).unlink()
    res = load(study, traces=False, cache=cache)  # no snapshot any more: every file, t0's from the cache
    assert sorted(reads) == [f"trials/{t}.parquet" for t in ("crashed", "t1", "t2", "t3", "t4")] and (res.trials["trial_id"] == "t0").sum() == 3 and res.trials["trial_id"].nunique() == 6


def test_compact_errors_and_empty_studies(tmp_path):
    with pytest.raises(FileNotFoundError, match="cannot compact .*nope: not a study directory"):
        compact(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert compact(tmp_path / "empty") == 0 and not (tmp_path / "empty" / "compact").exists()
    study = _study(tmp_path)
    compact(study)
    for f in (*(study / "trials").iterdir(), *(study / "traces").iterdir()):
        f.unlink()
    assert compact(study) == 0  # the old snapshot is superseded by an empty one, not left to be trusted
    res = load(study)
    assert res.trials.empty and res.traces.empty and res.skipped == []


def test_set_aside_moves_a_trials_files_out_of_view_and_keeps_them(tmp_path):
    study = _study(tmp_path, n=3)
    compact(study)  # a snapshot taken before must not bring the orphan back
    ids = sorted(load(study).trials.trial_id.unique())
    orphan = ids[1]
    store = StudyStore.of(str(tmp_path), study.name)
    assert store.trial_ids() == set(ids)
    assert store.set_aside([orphan]) == [orphan]
    res = load(study)
    rest = sorted(set(ids) - {orphan})
    assert len(rest) == 3 and sorted(res.trials.trial_id.unique()) == rest
    assert orphan not in set(res.traces.trial_id)
    kept = pd.read_parquet(study / "orphaned" / "trials" / f"{orphan}.parquet")
    assert set(kept.trial_id) == {orphan} and len(kept) > 0  # moved, not deleted
    assert store.trial_ids() == set(rest)
    with pytest.raises(ValueError):
        store.set_aside(["../escape"])
