"""Several trials per GPU: the schema of a trial's GPU share, and the resources Tune is given for it."""

import pytest
import ray

from deqlab.study import load_study, parse_study
from deqlab.study.tuner import _default_concurrency, _trainable
from deqlab.study.spec import StudyError


def spec(**trainer):
    return parse_study({"name": "gpus", "base": {"epochs": 1}, "space": {"seed": {"grid": [0, 1]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"},
                        "trainer": trainer}, "gpus.yaml")


@pytest.mark.parametrize("share", [0.25, 0.5, 1, 2])
def test_a_fraction_or_whole_gpus_are_accepted(share):
    assert spec(use_gpu=True, gpus_per_worker=share).trainer.gpus_per_worker == share


@pytest.mark.parametrize("trainer, expected", [
    ({"use_gpu": True, "gpus_per_worker": 1.5}, "trainer.gpus_per_worker: 1.5 is neither a fraction in (0, 1] nor"),
    ({"use_gpu": True, "gpus_per_worker": 0}, "trainer.gpus_per_worker: 0 with use_gpu: true"),
    ({"use_gpu": True, "gpus_per_worker": -0.5}, "trainer.gpus_per_worker: Input should be greater than or equal"),
    ({"use_gpu": True, "num_workers": 2, "gpus_per_worker": 0.5},
     "trainer.gpus_per_worker: 0.5 with num_workers 2: each Ray Train worker is an NCCL rank and needs whole GPUs"),
])
def test_impossible_gpu_shares_are_named(trainer, expected):
    with pytest.raises(StudyError, match=None) as err:
        spec(**trainer)
    assert expected in str(err.value), str(err.value)


def _bundles(trainable) -> list:
    return trainable._resources.bundles  # what tune.with_resources hands Tune


def test_function_trials_ask_tune_for_their_gpu_share(monkeypatch):
    quarter = spec(use_gpu=True, gpus_per_worker=0.25, cpus_per_worker=2)
    assert _bundles(_trainable(quarter, "/tmp/x")) == [{"CPU": 2.0, "GPU": 0.25}]
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 16.0, "GPU": 2.0})
    assert _default_concurrency(quarter) == 8  # 2 GPUs x 4 trials each (16 CPUs / 2 fit 8 as well)
    assert _bundles(_trainable(spec(), "/tmp/x")) == [{"CPU": 1.0}]  # CPU study: no GPU asked
    # Ray Train: the trial is a 0.1-CPU driver; its workers hold the GPUs through the TorchTrainer
    assert _bundles(_trainable(spec(use_gpu=True, num_workers=2), "/tmp/x")) == [{"CPU": 0.1}]


def test_gpu_cluster_study_packs_four_trials_per_gpu():
    s = load_study("studies/gpu_cluster.yaml")
    t = s.trainer
    assert (t.num_workers, t.use_gpu, t.gpus_per_worker) == (0, True, 0.25)
    assert s.search.max_concurrent_trials == 8 * 4  # cluster.yaml's 8 single-GPU workers, 4 trials each
    assert _bundles(_trainable(s, "/tmp/x")) == [{"CPU": t.cpus_per_worker, "GPU": 0.25}]
