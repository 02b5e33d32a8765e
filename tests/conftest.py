"""Shared test settings.

One intra-op thread: the test models are tiny, where a second thread costs more
in synchronisation than it gains (measured 4.6x slower per evaluation on a busy
2-core machine), and results stay bit-identical run to run.
"""

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray of 2 CPUs shared by a module's tests (Ray start-up costs ~3 s)."""
    import ray

    from deqlab.study.tuner import start_ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()
