"""Unconverged trials end `diverged` by default (`max_unconverged_frac` 0.5): an absurd learning rate or a
tolerance float32 cannot reach, each a real short training run on digits."""

import pytest

from deqlab.run import DEFAULT_MAX_UNCONVERGED, TrainConfig, train
from study_factory import TINY


def run(**over):
    cfg = TrainConfig(**{**TINY, "epochs": 1, **over})
    assert cfg.max_unconverged_frac == DEFAULT_MAX_UNCONVERGED == 0.5
    return train(cfg)


@pytest.mark.parametrize("over", [{"optim": {"lr": 1e9}}, {"deq": {"tol": 1e-300, "max_iter": 20}}],
                         ids=["lr-1e9", "tol-1e-300"])
def test_an_unconverged_trial_is_diverged_by_default(over):
    result = run(**over)
    assert result.status == "diverged", result.final
    assert result.error and ("unconverged fraction" in result.error or "non-finite" in result.error)
    if "unconverged fraction" in result.error:
        assert 1 - result.final["converged_frac"] > 0.5


def test_a_healthy_trial_still_completes_and_the_check_can_be_turned_off():
    healthy = run()
    assert healthy.status == "completed" and healthy.final["converged_frac"] >= 0.5
    off = train(TrainConfig(**{**TINY, "epochs": 1, "deq": {"tol": 1e-300, "max_iter": 20},
                               "max_unconverged_frac": None}))
    assert off.status == "completed" and off.final["converged_frac"] < 0.5
