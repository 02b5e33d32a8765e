"""Shared test settings, the one local Ray of the in-process studies, and the order the suite runs in.

One intra-op thread: the test models are tiny, where a second thread costs more
in synchronisation than it gains (measured 4.6x slower per evaluation on a busy
2-core machine), and results stay bit-identical run to run.

The suite runs on two pytest-xdist workers (`-n 2 --dist loadscope` in
pyproject.toml): most of its time is Ray and Python start-up and waiting on
Ray, not CPU. Each test module is one unit of work (its module-scoped fixtures
are built once, its tests run in file order on one worker). Modules are handed
out longest first (`COST`), so no worker is left with a long module at the
end, and the modules whose tests run studies in this process (those asking
for `ray_local`) before all others, so each worker runs its share of them one
after another on one local Ray. `-n 0` runs the suite in one process, in the
same order, on one shared Ray. (`--dist loadgroup` would keep those modules on
one worker, but pytest-xdist 3.8 marks a group in `item._nodeid`, which pytest
9 no longer reads: every test became a unit of its own, and module fixtures
were built on both workers.)
"""

import pytest
import torch

torch.set_num_threads(1)

RAY_GROUP = "ray_local"

# Rough seconds per module in a run of the suite on 2 workers on the busy 2-core machine (`--durations=0`, setup
# included), only used to hand out the longest modules first; a stale or missing entry changes the order, never
# what a test checks.
COST = {
    "test_resume_matrix": 380, "test_study_ray": 300, "test_faults": 295, "test_study_s3": 250,
    "test_checkpoint_resume": 140, "test_seed_check": 130, "test_study_interrupt": 100, "test_api": 90,
    "test_own_code": 86, "test_bench_cli": 70, "test_pbt": 60, "test_first_screen": 60, "test_tracking": 50,
    "test_durable": 44, "test_cluster_run": 41, "test_compile": 120, "test_train": 38, "test_dashboard": 32,
    "test_study_budget": 28, "test_parallel": 23, "test_cli": 23, "test_hostile_results": 20,
    "test_study_failures": 19, "test_cluster_auth": 19, "test_fuzz": 15, "test_backward": 11,
}
GROUP = pytest.StashKey[str]()


@pytest.fixture
def ray_local():
    """The local Ray of 2 CPUs that every in-process study of the suite shares (starting one costs ~6 s and
    stopping it ~1.4 s on 2 cores). It starts with the first test that asks for it and stops after the last
    test of the modules that use it (`pytest_runtest_teardown`), so no other test finds a Ray running."""
    from deqlab.study.tuner import start_ray

    start_ray(num_cpus=2)  # a no-op while it runs
    yield


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Order the modules longest first (xdist hands them out in this order), the `ray_local` modules together
    and first, each module's tests in their collected order."""
    ray_modules = {item.path for item in items if RAY_GROUP in getattr(item, "fixturenames", ())}
    first = {}  # module or group: index of its first test
    for i, item in enumerate(items):
        item.stash[GROUP] = RAY_GROUP if item.path in ray_modules else item.path.stem
        first.setdefault(item.stash[GROUP], i)
        first.setdefault(item.path.stem, i)
    cost = {}
    for module in {item.path.stem for item in items}:
        cost[module] = COST.get(module, 0)
    cost[RAY_GROUP] = sum(cost[path.stem] for path in ray_modules)

    def key(item):
        group, module = item.stash[GROUP], item.path.stem
        return -cost[group], first[group], -cost[module], first[module]

    items.sort(key=key)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Stop the shared Ray after the last test of its group."""
    result = yield
    group = item.stash.get(GROUP, None)
    if group == RAY_GROUP and (nextitem is None or nextitem.stash.get(GROUP, None) != RAY_GROUP):
        import sys

        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()
    return result
