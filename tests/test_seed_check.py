"""The seed check: real training runs of y = 2x for every init mode, discrete and continuous."""

from __future__ import annotations

import math

import pytest
import torch

from deqlab.run import seed_check as sc
from deqlab.run.seed_check import (
    PROBE_X,
    TARGET,
    LinearCell,
    SeedRow,
    seed_deq,
    format_table,
    run_seed_check,
    train_one,
    verdict,
)
from deqlab.run.seed_figure import figure_model, trajectory_figure

INITS = ("zeros", "skipreg", "skip")
SOLVERS = ("anderson", "continuous")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Tests that share the module fixture: six real 1000-step trainings (~30 s on 2 idle cores).
slow = pytest.mark.slow


@pytest.fixture(scope="module")
def rows() -> list[SeedRow]:
    # The article's 1000 steps; two processes so the six runs take ~half the wall time.
    return run_seed_check(inits=INITS, solvers=SOLVERS, steps=1000, seed=0, workers=2)


@slow
def test_rows_cover_every_init_and_solver_in_order(rows):
    assert [(r.init, r.solver) for r in rows] == [(i, s) for i in INITS for s in SOLVERS]
    for r in rows:
        assert r.model is not None
        assert r.nfe_fwd >= 1 and r.train_time_s > 0
        assert math.isfinite(r.final_loss)
        assert r.converged, f"{r.init}/{r.solver}: test-time solve did not meet its tolerance"


@slow
@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("solver", SOLVERS)
def test_model_maps_minus_5_to_minus_10(rows, init, solver):
    (row,) = [r for r in rows if (r.init, r.solver) == (init, solver)]
    assert abs(row.prediction - TARGET) < 0.5, f"{init}/{solver} predicts {row.prediction} at x = {PROBE_X}"
    assert row.passed


@slow
def test_trained_cell_gain_is_two_thirds(rows):
    # f(z, x) = a (z + x) + c has fixed point 2x only for a = 2/3: the weights, not just the output, are right.
    for r in rows:
        assert abs(r.model.f.gain() - 2 / 3) < 0.02, (r.init, r.solver, r.model.f.gain())


@slow
def test_parallel_rows_equal_a_serial_run(rows):
    serial = train_one("zeros", "anderson", steps=1000, seed=0)
    (parallel,) = [r for r in rows if (r.init, r.solver) == ("zeros", "anderson")]
    assert serial.prediction == parallel.prediction
    assert serial.final_loss == parallel.final_loss
    assert serial.nfe_fwd == parallel.nfe_fwd


@slow
@pytest.mark.parametrize("init", INITS)
def test_trajectories_level_off_at_the_prediction(rows, init, tmp_path):
    # Tightly solved (anderson, tol 1e-5) models: the prediction is the cell's fixed point.
    (row,) = [r for r in rows if (r.init, r.solver) == (init, "anderson")]
    traj = trajectory_figure(row.model, x=PROBE_X, starts=10, depth=100, path=tmp_path / "t.png")
    steps = traj.values.shape[0] - 1
    assert traj.values.shape[1] == 10 and 10 <= steps <= 100
    start = traj.values[0]
    assert bool(((start >= 0) & (start <= 10)).all()) and float(start.std()) > 1  # ten different starts in [0, 10]
    assert traj.prediction == pytest.approx(row.prediction, abs=1e-6)
    assert float((traj.final - traj.prediction).abs().max()) < 0.1
    # levelled off: it stopped early because the last steps no longer move
    assert steps < 100
    assert float((traj.values[-1] - traj.values[-6]).abs().max()) < 1e-3
    full = trajectory_figure(row.model, starts=10, depth=100, stop_tol=None)
    assert full.values.shape == (101, 10)
    assert torch.equal(full.values[: steps + 1], traj.values)
    assert float((full.final - traj.prediction).abs().max()) < 0.1


@slow
def test_continuous_models_trajectories_end_near_their_prediction(rows):
    # Solved to tol 1e-2 (relative) only: the prediction may sit a little off the exact fixed point.
    for r in rows:
        if r.solver != "continuous":
            continue
        traj = trajectory_figure(r.model, path=None)
        assert traj.path is None
        assert float((traj.final - traj.prediction).abs().max()) < 0.5, (r.init, traj.final, traj.prediction)


@slow
def test_trajectory_png_is_written(rows, tmp_path):
    shown = figure_model(rows)
    assert (shown.init, shown.solver) == ("zeros", "anderson")
    path = tmp_path / "sub" / "trajectories.png"
    traj = trajectory_figure(shown.model, path=path)
    assert traj.path == path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5000


@slow
def test_format_table_and_verdict(rows):
    table = format_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    for word in ("init", "solver", "pred(-5)", "|error|", "fwd NFE", "train s"):
        assert word in lines[0]
    for r, line in zip(rows, lines[2:]):
        assert line.split()[:2] == [r.init, r.solver]
        assert f"{r.prediction:.4f}" in line
    assert verdict(rows).startswith("seed check passed: all 6 models")


def test_verdict_names_failed_models():
    good = SeedRow("zeros", "anderson", -10.01, 3.0, 0.1, 0.0, True)
    bad = SeedRow("skip", "continuous", -8.0, 20.0, 0.1, 1.0, True)
    nan = SeedRow("skipreg", "anderson", math.nan, 50.0, 0.1, math.nan, False)
    assert not bad.passed and not nan.passed and good.passed
    text = verdict([good, bad, nan])
    assert text.startswith("seed check FAILED: 2 of 3")
    assert "skip/continuous" in text and "skipreg/anderson" in text
    assert "\n" not in text


def test_training_is_deterministic():
    a = train_one("skip", "anderson", steps=30, seed=3)
    b = train_one("skip", "anderson", steps=30, seed=3)
    c = train_one("skip", "anderson", steps=30, seed=4)
    assert a.prediction == b.prediction and a.final_loss == b.final_loss
    assert a.prediction != c.prediction


def test_initial_cell_is_a_contraction_for_every_seed():
    for seed in range(40):
        for init in INITS:
            model = seed_deq(init, "anderson", seed)
            assert abs(model.f.gain()) <= sc.INIT_GAIN_LIMIT + 1e-6


def test_limit_gain_rescales_an_expanding_cell():
    cell = LinearCell()
    with torch.no_grad():
        cell.inner.weight.fill_(1.0)
        cell.outer.weight.fill_(0.6)  # a = 5 * 0.6 = 3: iteration diverges
    cell.limit_gain(0.5)
    assert cell.gain() == pytest.approx(0.5, rel=1e-5)
    cell.limit_gain(0.9)  # already inside: untouched
    assert cell.gain() == pytest.approx(0.5, rel=1e-5)


def test_seed_deq_wires_the_article_settings():
    cont = seed_deq("zeros", "continuous")
    assert cont.cfg.tol == 1e-2 and cont.cfg.solver == "continuous"
    assert cont.cfg.forward.options.model_dump(exclude_unset=True) == {"method": "dopri5", "rtol": 1e-2, "atol": 1e-2}
    assert cont.cfg.adjoint.solver == "anderson" and cont.cfg.adjoint.tol == 1e-5
    skip = seed_deq("skip", "anderson")
    assert isinstance(skip.skip_net, torch.nn.Linear)
    assert seed_deq("skipreg", "anderson").skip_net is None


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"inits": ("zeros", "nope")}, "unknown init 'nope'"),
        ({"solvers": ("newton",)}, "unknown solver 'newton'"),
        ({"inits": ()}, "no init given"),
        ({"steps": 0}, "steps must be"),
        ({"steps": 1.5}, "steps must be"),
        ({"seed": "0"}, "seed must be"),
        ({"workers": 0}, "workers must be"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_seed_check(**kwargs)


def test_trajectory_arguments_are_checked():
    model = seed_deq("zeros", "anderson")
    with pytest.raises(ValueError, match="starts"):
        trajectory_figure(model, starts=0)
    with pytest.raises(ValueError, match="depth"):
        trajectory_figure(model, depth=0)
