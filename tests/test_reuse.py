"""Fixed-point reuse (`deq.reuse: epoch`): what the buffer keeps, what a reused start costs (against the
counting cell of test_nfe_counts), that evaluation stays cold unless asked, and replicas' fixed shards."""

import copy
import pytest
import torch
from test_nfe_counts import Counting, Counts, relu_deq
from torch import nn

from deqlab.data import load_dataset, make_loaders
from deqlab.data.loading import FixedShardSampler
from deqlab.layers import DEQConfig
from deqlab.run import TrainConfig, train
from deqlab.run.loop import _train_epoch, model_for
from deqlab.run.parallel import Replicas
from deqlab.run.reuse import Reuse
from deqlab.solvers.options import SOLVER_OPTIONS

F64 = torch.float64
DIGITS = {"name": "digits", "subset": 128, "test_subset": 64, "batch_size": 32}
MLP = {"name": "mlp", "options": {"width": 12, "inner": None, "cell": "relu_sum"}}


def _setup(init="zeros", stop_mode="batch"):
    cfg = TrainConfig(seed=0, epochs=1, data=DIGITS, model=MLP,
                      deq={"solver": "anderson", "tol": 1e-4, "stop_mode": stop_mode, "init": init,
                           "reuse": "epoch"})
    splits = load_dataset("digits", subset=128, test_subset=64, seed=0)
    torch.manual_seed(0)
    model = model_for(cfg, splits)
    model.deq.f = Counting(model.deq.f)
    train_loader, test_loader = make_loaders(splits, 32, seed=0, indexed=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return cfg, model, opt, train_loader, test_loader, len(splits.train)


class Recording:
    """The loader's batches, passed on unchanged, with each batch's sample indices kept."""

    def __init__(self, loader):
        self.loader, self.indices = loader, []

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.indices.append(batch[2].clone())
            yield batch


def test_the_buffer_holds_each_samples_fixed_point_of_the_previous_epoch_and_the_second_epoch_costs_less():
    cfg, model, opt, train_loader, _, n = _setup()
    reuse = Reuse(model, n, torch.device("cpu"))
    solved = []  # each training batch's z*, as the layer returned it
    layer = model.deq
    layer.register_forward_hook(lambda m, inp, out: solved.append(out[1].z_star.clone())
                                if m is layer and m.training else None)  # not the copy's (deepcopy keeps hooks)
    first = Recording(train_loader)
    m1 = _train_epoch(model, first, opt, None, cfg, torch.device("cpu"), reuse=reuse)
    assert m1["train_reuse_frac"] == 0.0  # nothing kept before the first epoch
    assert len(solved) == len(first.indices) == 4
    kept = reuse.buffer
    assert bool(kept.seen.all()) and kept.values.shape == (n, 12)
    for idx, z in zip(first.indices, solved):
        assert torch.equal(kept.values[kept.rows[idx]], z)  # value for value, at the samples' own rows
    assert kept.nbytes == n * 12 * 4 + n * 1 + n * 8  # float32 states, seen flags, index map

    # the second epoch from the same weights, optimiser and shuffle: with the kept starts, and without
    with_model, with_opt, with_loader = model, opt, Recording(train_loader)
    cold_model, cold_opt = copy.deepcopy(model), copy.deepcopy(opt)
    cold_loader = copy.deepcopy(train_loader)  # the same generator state: the same batches
    Counts.reset()
    warm = _train_epoch(with_model, with_loader, with_opt, None, cfg, torch.device("cpu"), reuse=reuse)
    warm_calls = Counts.fwd
    Counts.reset()
    cold = _train_epoch(cold_model, cold_loader, cold_opt, None, cfg, torch.device("cpu"))
    cold_calls = Counts.fwd
    assert warm["train_reuse_frac"] == 1.0
    # stop mode "batch": a sample's share is every call, so the columns are the counted calls per batch
    assert warm["train_nfe_fwd"] * 4 == warm_calls and cold["train_nfe_fwd"] * 4 == cold_calls
    assert warm_calls < cold_calls, (warm_calls, cold_calls)
    # the buffer now holds the second epoch's fixed points
    assert len(solved) == 8
    for idx, z in zip(with_loader.indices, solved[4:]):
        assert torch.equal(kept.values[kept.rows[idx]], z)


@pytest.mark.parametrize("init", ["zeros", "skip", "skipreg"])
def test_a_reused_start_costs_no_evaluation_and_the_init_runs_on_the_other_samples_only(init):
    deq = relu_deq(init=init, skip_weight=1.0, stop_mode="batch")
    inputs = []
    if deq.skip_net is not None:
        deq.skip_net.register_forward_hook(lambda m, inp, out: inputs.append(len(inp[0])))
    x = torch.randn(6, 8, dtype=F64, generator=torch.Generator().manual_seed(1))
    z_star, _ = deq(x)
    known = torch.tensor([True, True, True, True, False, False])
    Counts.reset()
    with deq.start_from(z_star.detach(), known):
        z, info = deq(x)
    calls = Counts.fwd
    ((z ** 2).sum() + info.reg_loss).backward()
    assert calls == info.nfe_fwd  # batched calls, against the cell's own count
    assert Counts.vjp == info.nfe_bwd
    assert info.reused_frac == pytest.approx(4 / 6)
    if init == "skipreg":  # f(0, x) ran on 2 of the 6 samples: each sample's share of that call is 1/3
        assert info.nfe_fwd_per_sample == pytest.approx(info.nfe_fwd - 4 / 6)
    else:
        assert info.nfe_fwd_per_sample == info.nfe_fwd
    if init == "skip":
        assert inputs == [6, 2]  # the cold pass, then the two samples without a kept start
    # the skip term covers only the samples the init predicted: the reused rows add 0 to its mean
    if init != "zeros":
        with deq.start_from(z_star.detach(), torch.ones(6, dtype=torch.bool)):
            _, all_known = deq(x)
        assert float(all_known.skip_mse) == 0.0 and all_known.reused_frac == 1.0
    # the fully known start is already the fixed point: the solver stops at its first check
    cold_nfe = deq(x)[1].nfe_solver_per_sample
    with deq.start_from(z_star.detach(), torch.ones(6, dtype=torch.bool)):
        warm_nfe = deq(x)[1].nfe_solver_per_sample
    assert warm_nfe <= 2 < cold_nfe


@pytest.mark.parametrize("mode,options", [("implicit", {}), ("phantom", {"steps": 4}), ("unrolled", {"steps": 3}),
                                          ("jfb", {}), ("shine", {})])
def test_every_backward_mode_counts_as_always_from_a_reused_start(mode, options):
    deq = relu_deq(init="skipreg", skip_weight=1.0, backward=mode, backward_options=options,
                   correction={"weight": 0.5, "steps": 2})
    x = torch.randn(6, 8, dtype=F64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        z_prev = deq(x)[0]
    Counts.reset()
    with deq.start_from(z_prev, torch.tensor([True, False, True, False, True, True])):
        z, info = deq(x)
    calls = Counts.fwd
    loss = (z ** 2).sum() + info.reg_loss + sum(w * (s ** 2).sum() for w, s in info.correction)
    loss.backward()
    assert calls == info.nfe_fwd and Counts.vjp == info.nfe_bwd  # the cell's own count, as without reuse
    assert info.nfe_fwd_per_sample == pytest.approx(info.nfe_fwd - 4 / 6)  # f(0, x) on 2 of 6 samples


def test_a_sample_that_did_not_converge_keeps_no_start():
    deq = relu_deq(tol=1e-4, max_iter=30)
    x = torch.randn(6, 8, dtype=F64, generator=torch.Generator().manual_seed(3))
    reuse = Reuse(nn.Sequential(deq), 10, torch.device("cpu"))
    idx = torch.tensor([0, 2, 4, 6, 8, 9])
    with torch.no_grad():
        _, info = deq(x)
        assert bool(info.converged.all())
        info.converged = torch.tensor([True, True, False, True, False, True])  # as if two had hit max_iter
        reuse.keep(idx, info)
    z, known = reuse.buffer.lookup(idx)
    assert known.tolist() == [True, True, False, True, False, True]  # those two start from the init next time
    assert torch.equal(z[known], info.z_star[known])
    assert reuse.buffer.lookup(torch.tensor([1, 3]))[1].tolist() == [False, False]  # never seen


@pytest.mark.parametrize("solver", list(SOLVER_OPTIONS))
def test_every_solver_starts_from_the_kept_fixed_point(solver):
    deq = relu_deq(solver=solver, tol=1e-5, stop_mode="rel", max_iter=60)
    x = torch.randn(6, 8, dtype=F64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_star, cold = deq(x)
        half = torch.tensor([True, False] * 3)
        Counts.reset()
        with deq.start_from(z_star, half):
            z, warm = deq(x)
    assert cold.converged_frac == warm.converged_frac == 1.0
    assert Counts.fwd == warm.nfe_fwd  # counted as always
    assert warm.reused_frac == 0.5
    assert warm.nfe_solver_per_sample < cold.nfe_solver_per_sample  # the kept half needs (almost) nothing
    torch.testing.assert_close(z, z_star, atol=1e-3, rtol=0)  # the same equilibrium


def test_evaluation_reuses_only_when_asked_and_epoch_zero_is_unchanged_by_reuse():
    runs = {}
    for name, deq in (("none", {}), ("epoch", {"reuse": "epoch"}), ("eval", {"reuse": "epoch", "reuse_eval": True})):
        cfg = TrainConfig(seed=0, epochs=2, data=DIGITS, model=MLP, device="cpu",
                          deq={"solver": "anderson", "tol": 1e-4, **deq})
        runs[name] = train(cfg).history
    train_cols = ("train_loss", "train_nfe_fwd", "nfe_bwd", "nfe_train_total")
    test_cols = ("test_acc", "test_loss", "nfe_fwd", "nfe_test_total", "converged_frac")
    # epoch 0: nothing is kept yet, the indexed loader draws the same batches: every number equal
    for col in train_cols + test_cols:
        assert runs["none"][0][col] == runs["epoch"][0][col] == runs["eval"][0][col], col
    assert runs["epoch"][0]["train_reuse_frac"] == 0.0 and runs["epoch"][1]["train_reuse_frac"] == 1.0
    assert runs["epoch"][1]["train_nfe_fwd"] < runs["none"][1]["train_nfe_fwd"]
    # reuse_eval changes evaluation only: the training of "eval" is "epoch"'s, bit for bit
    for col in train_cols:
        assert runs["eval"][1][col] == runs["epoch"][1][col], col
    # the same model tested cold ("epoch") and from its previous evaluation's fixed points ("eval")
    assert runs["eval"][1]["nfe_fwd"] < runs["epoch"][1]["nfe_fwd"]
    assert runs["eval"][1]["test_acc"] == pytest.approx(runs["epoch"][1]["test_acc"], abs=2 / 64)
    # the buffer's size is reported: 128 training (and 64 test) states of width 12, flags and index maps
    assert runs["epoch"][1]["reuse_buffer_bytes"] == 128 * (12 * 4 + 1 + 8)
    assert runs["eval"][1]["reuse_buffer_bytes"] == (128 + 64) * (12 * 4 + 1 + 8)
    assert "reuse_buffer_bytes" not in runs["none"][1]


def test_reuse_is_validated_before_anything_runs():
    with pytest.raises(ValueError, match="deq.reuse_eval: true needs deq.reuse: epoch"):
        DEQConfig(reuse_eval=True)
    with pytest.raises(ValueError, match="reuse"):
        DEQConfig(reuse="always")
    with pytest.raises(ValueError, match="deq.reuse.*no DEQ layer"):
        TrainConfig(model={"name": "neural_ode"}, deq={"reuse": "epoch"})


def test_fixed_shards_keep_each_replicas_samples_across_epochs():
    n, world = 10, 3
    samplers = [FixedShardSampler(n, r, world, seed=4) for r in range(world)]
    shards = [sorted(s.indices.tolist()) for s in samplers]
    assert all(len(s) == 4 for s in shards)  # padded to equal steps, as DistributedSampler does
    assert set().union(*map(set, shards)) == set(range(n))
    orders = []
    for epoch in range(3):
        for s in samplers:
            s.set_epoch(epoch)
        orders.append([list(iter(s)) for s in samplers])
        assert [sorted(o) for o in orders[-1]] == shards  # the same samples on each replica, every epoch
    assert orders[0] != orders[1]  # in a new order
    # a replica's buffer has rows for its own shard only, and refuses another's sample
    reuse = Reuse(nn.Sequential(relu_deq()), n, torch.device("cpu"), samplers[0].indices)
    assert reuse.buffer.count == len(set(shards[0]))
    other = next(i for i in range(n) if i not in shards[0])
    with pytest.raises(IndexError, match="outside this replica's shard"):
        reuse.buffer.lookup(torch.tensor([other]))


class AloneReplica(Replicas):
    """Rank `rank` of a data-parallel group of 2 whose collectives see only this replica (the loop's sharding
    and reuse are what is tested; test_parallel tests the collectives on a real process group)."""

    def broadcast_parameters(self, model):
        pass

    def average_gradients(self, model, loss):
        return float(loss.detach())

    def mean(self, values):
        return dict(values)

    def weight_spread(self, model):
        return 0.0


@pytest.mark.parametrize("rank", [0, 1])
def test_each_replica_reuses_its_own_shards_fixed_points(rank):
    cfg = TrainConfig(seed=0, epochs=2, device="cpu", data={**DIGITS, "batch_size": 64}, model=MLP,
                      deq={"solver": "anderson", "tol": 1e-4, "reuse": "epoch"})
    history = train(cfg, replicas=AloneReplica(rank, 2)).history
    assert history[0]["train_reuse_frac"] == 0.0
    assert history[1]["train_reuse_frac"] == 1.0  # every sample of epoch 1 was on this replica in epoch 0
    assert history[1]["reuse_buffer_bytes"] == 64 * (12 * 4 + 1) + 128 * 8  # its half of the states, a full map


OWN = '''
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from deqlab.layers import DEQ
from deqlab.models import DEQModel


class Pairs(Dataset):
    """A user's Dataset of (x, y) pairs, as the data-function contract asks: no index in it."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def blobs(n=40):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2 * n)
    x = (rng.normal(size=(2 * n, 4)) + 3 * y[:, None]).astype("float32")
    return Pairs(x[:n], y[:n]), Pairs(x[n:], y[n:])


class Net(DEQModel):
    def __init__(self, input_shape, classes, deq):
        super().__init__()
        self.enc = nn.Linear(4, 6)
        self.deq = DEQ(Cell(), deq)
        self.head = nn.Linear(6, classes)

    def injection(self, x):
        return self.enc(x)

    def readout(self, z):
        return self.head(z)


class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 6)

    def forward(self, z, x):
        return torch.tanh(0.5 * self.lin(z) + x)
'''


def test_your_own_model_and_datasets_reuse_unchanged(tmp_path):
    from deqlab import plugins
    from deqlab.run.preflight import try_config

    (tmp_path / "own_reuse.py").write_text(OWN)
    plugins.add_folder(tmp_path)
    cfg = TrainConfig(seed=0, epochs=2, device="cpu", data={"name": "own_reuse:blobs", "batch_size": 16},
                      model={"name": "own_reuse:Net"}, deq={"tol": 1e-4, "reuse": "epoch"})
    assert "passed" in try_config(cfg)  # the pre-Ray try takes a reused step too
    history = train(cfg).history
    assert [m["train_reuse_frac"] for m in history] == [0.0, 1.0]
    assert history[1]["reuse_buffer_bytes"] == 40 * (6 * 4 + 1 + 8)


class Crash(Exception):
    pass


def test_a_resumed_run_continues_with_the_kept_fixed_points_bit_identical(tmp_path):
    from deqlab.results import StudyStore, load
    from deqlab.run.checkpoint import Checkpointing, newest_state
    from deqlab.run.config import CheckpointSpec
    from deqlab.run.one import run_one

    cfg = TrainConfig(seed=0, epochs=3, device="cpu", data=DIGITS, model=MLP,
                      deq={"solver": "anderson", "tol": 1e-4, "reuse": "epoch"})

    def run(trial, crash_after=None, start=None):
        def reporter(epoch, metrics):
            if epoch == crash_after:
                raise Crash(epoch)

        return run_one(cfg, study="r", trial_id=trial, storage=str(tmp_path), reporter=reporter,
                       checkpointing=Checkpointing(CheckpointSpec(), start=start), local_checkpoints=True)

    run("whole")
    with pytest.raises(Crash):
        run("cut", crash_after=0)
    start = newest_state(StudyStore.of(str(tmp_path), "r"), "cut")
    kept = start["reuse"]["train"]
    assert bool(kept["seen"].all()) and kept["values"].shape == (128, 12)  # epoch 0's fixed points, saved
    run("cut", start=start)
    rows = load(tmp_path / "r").trials.sort_values("epoch")
    cols = ["train_loss", "train_nfe_fwd", "nfe_bwd", "train_reuse_frac", "test_acc", "nfe_fwd", "residual"]
    whole, cut = (rows[rows.trial_id == t][cols].reset_index(drop=True) for t in ("whole", "cut"))
    assert cut.equals(whole)  # epochs 1 and 2 started from the same kept states: every value, bit for bit
