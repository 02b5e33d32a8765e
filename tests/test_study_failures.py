"""Why a trial failed reaches the user: the exception's type and message in the Parquet `error` column,
the progress line, `deqlab ls` and the dashboard."""

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from study_factory import TINY

from deqlab.report import views as dd
from deqlab.results import load
from deqlab.study import parse_study
from deqlab.study.failures import describe_exception
from deqlab.study.driver import run_study
from deqlab.study.summary import final_rows, list_studies
from deqlab.run import TrainConfig

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
NO_CUDA = "ValueError: device 'cuda' requested but CUDA is not available"


def test_describe_exception_unwraps_ray_and_drops_pydantic_links():
    class Wrapped(Exception):  # what RayTaskError does: the trial's exception as `.cause`
        def __init__(self, cause):
            super().__init__("Traceback (most recent call last): ...")
            self.cause = cause

    assert describe_exception(Wrapped(ValueError("bad value\nsecond line"))) == "ValueError: bad value second line"
    with pytest.raises(ValidationError) as info:
        TrainConfig(epochs=0)
    text = describe_exception(Wrapped(info.value))
    assert text.startswith("ValidationError: TrainConfig: epochs: ") and "greater than" in text
    assert "pydantic.dev" not in text and "\n" not in text
    assert describe_exception(KeyError("x")) == "KeyError: 'x'"


def test_error_text_gives_the_last_exception_without_unpickling_anything():
    from deqlab.study.failures import _last_error_line

    ray_text = ("Failure # 1 (occurred at 2026-12-01_16-00-00)\nray::ImplicitFunc.train() (pid=1, ip=1)\n"
                '  File "x.py", line 3, in f\n    raise ValueError(...)\n' + NO_CUDA + "\n")
    assert _last_error_line(ray_text) == NO_CUDA
    pydantic_text = ("Traceback (most recent call last):\n  File \"a\", line 1\n"
                     "pydantic_core._pydantic_core.ValidationError: 1 validation error for TrainConfig\nepochs\n"
                     "  Input should be greater than 0 [type=greater_than]\n"
                     "    For further information visit https://errors.pydantic.dev/2.11/v/greater_than\n")
    assert _last_error_line(pydantic_text) == ("ValidationError: 1 validation error for TrainConfig epochs "
                                               "Input should be greater than 0 [type=greater_than]")


@pytest.mark.ray
@pytest.mark.timeout(300)
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA to fail")
def test_failed_trial_records_its_exception_everywhere(ray_local, tmp_path, capsys):
    spec = parse_study({"name": "broken", "base": {**TINY, "epochs": 1, "device": "cuda"},
                        "space": {"seed": {"grid": [0, 1]}}, "objectives": [{"metric": "test_acc", "mode": "max"}],
                        "search": {"algorithm": "grid"}}, "broken")
    said = []
    outcome = run_study(spec, str(tmp_path), say=said.append)
    final = final_rows(load(outcome.path, traces=False).trials)
    assert sorted(final.status) == ["failed", "failed"]
    assert (final.error == NO_CUDA).all(), final.error.tolist()
    progress = [line for line in said if " failed" in line]
    assert len(progress) == 2 and all(f"failed: {NO_CUDA}" in line for line in progress), said
    listing = list_studies(str(tmp_path)).splitlines()
    assert listing[0].startswith("broken: 2 trials (2 failed)")
    assert sorted(listing[1:]) == sorted(f"  {t} failed: {NO_CUDA}" for t in final.trial_id)
    table = dd.failed_trials(final)
    assert table.error.tolist() == [NO_CUDA, NO_CUDA] and sorted(table.trial_id) == sorted(final.trial_id)
    shown = _dashboard_tables(outcome.path)  # the Overview page's "Failed trials" table
    assert any("error" in t.columns and (t.error == NO_CUDA).sum() == 2 for t in shown)


def _dashboard_tables(study_dir: str) -> list:
    from streamlit.testing.v1 import AppTest

    os.environ["DEQLAB_DASHBOARD_DIRS"] = study_dir
    try:
        at = AppTest.from_file(str(Path(__file__).parent.parent / "dashboard" / "app.py"), default_timeout=60)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return [d.value for d in at.dataframe]
    finally:
        del os.environ["DEQLAB_DASHBOARD_DIRS"]
