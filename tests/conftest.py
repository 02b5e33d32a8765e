"""Shared test settings, the one local Ray of the in-process studies, and the order the suite runs in.

One intra-op thread: the test models are tiny, where a second thread costs more
in synchronisation than it gains (measured 4.6x slower per evaluation on a busy
2-core machine), and results stay bit-identical run to run.

The suite runs on two pytest-xdist workers (`-n 2 --dist loadgroup` in
pyproject.toml): most of its time is Ray and Python start-up and waiting on
Ray, not CPU. Each test module is one unit of work (its module-scoped fixtures
are built once, its tests run in file order on one worker); the modules whose
tests run studies in this process (those asking for `ray_local`) form a single
unit that shares one local Ray. Units are handed out longest first (`COST`),
so no worker is left with a long module at the end. `-n 0` runs the suite in
one process, in the same order, with the same shared Ray.
"""

import pytest
import torch

torch.set_num_threads(1)

RAY_GROUP = "ray_local"

# Rough seconds per module on the 2-core machine (`pytest --durations=0`, setup included), only used to hand out
# the longest units first; a stale or missing entry changes the order, never what a test checks.
COST = {
    "test_faults": 240, "test_resume_matrix": 180, "test_study_ray": 220, "test_study_s3": 160,
    "test_checkpoint_resume": 120, "test_api": 70, "test_study_interrupt": 65, "test_own_code": 60,
    "test_seed_check": 57, "test_compile": 50, "test_bench_cli": 50, "test_tracking": 45,
    "test_cluster_run": 32, "test_first_screen": 32, "test_pbt": 30, "test_durable": 30, "test_dashboard": 25,
    "test_study_budget": 22, "test_study_failures": 19, "test_parallel": 19, "test_train": 15,
    "test_cluster_auth": 13, "test_cli": 9,
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


def pytest_configure(config):
    # pytest-xdist registers it too; here so that `--strict-markers` accepts it in a run without xdist
    config.addinivalue_line("markers", "xdist_group(name): tests of one group run on one xdist worker")


@pytest.hookimpl(tryfirst=True)  # before xdist's hook, which reads the group marks
def pytest_collection_modifyitems(config, items):
    """Group by module, the `ray_local` modules together; order the groups longest first, each group's tests in
    their collected order."""
    ray_modules = {item.path for item in items if RAY_GROUP in getattr(item, "fixturenames", ())}
    groups = {}  # group: (index of its first test, its modules)
    for i, item in enumerate(items):
        group = RAY_GROUP if item.path in ray_modules else item.path.stem
        item.stash[GROUP] = group
        groups.setdefault(group, (i, set()))[1].add(item.path.stem)
        item.add_marker(pytest.mark.xdist_group(group))
    cost = {group: sum(COST.get(m, 0) for m in modules) for group, (_, modules) in groups.items()}
    items.sort(key=lambda item: (-cost[item.stash[GROUP]], groups[item.stash[GROUP]][0]))


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
