"""Arrays to tensors: scaling, standardisation, seeded subsets, flattening, and the loaders.

torch is imported inside the functions, so ``import deqlab.data`` (``deqlab data
list``, ``deqlab data get``, a config check) stays free of it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Literal

import numpy as np

from . import sources
from .common import DataError, resolve_data_dir
from .table import TABLE, dataset

if TYPE_CHECKING:
    import torch
    from torch.utils.data import DataLoader, TensorDataset


@dataclasses.dataclass(frozen=True)
class DatasetSplits:
    """Both splits plus what a model needs to size itself.

    ``input_shape`` is one sample's shape: ``(C, H, W)``, ``(C*H*W,)`` when
    flattened, ``(1,)`` for ``y2x``. ``num_classes`` is None for regression.
    """

    train: TensorDataset
    test: TensorDataset
    num_classes: int | None
    input_shape: tuple[int, ...]
    name: str
    task: Literal["classification", "regression"]


def _check_int(label: str, value: int, minimum: int, wanted: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{label} must be {wanted}, got {value!r}")


def _subset_indices(n: int, k: int | None, seed: int, stream: int) -> np.ndarray | None:
    if k is None or k >= n:
        return None
    # Separate streams so the train subset does not change when test_subset does.
    rng = np.random.default_rng([int(seed), stream])
    return np.sort(rng.permutation(n)[:k])


def _standardized(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardisation with the full training split's statistics (the test split never leaks in);
    dimension 1 is the channel (a feature of flat rows)."""
    import torch

    std, mean = torch.std_mean(x_train, dim=(0, *range(2, x_train.dim())), correction=0, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return (x_train - mean) / std, (x_test - mean) / std


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    subset: int | None = None,
    test_subset: int | None = None,
    normalize: bool = True,
    seed: int = 0,
    flatten: bool = False,
    options: dict | None = None,
    path: str | None = None,
) -> DatasetSplits:
    """Load a data set as float32 inputs and int64 labels (float32 targets for y2x).

    ``normalize=True`` scales pixels to [0, 1] (digits by 16, others by 255) and
    then standardises each channel with the mean and std of the *full* training
    split, computed before any subsetting, so a subset study sees the same input
    transform as a full one and the test split never leaks into it. With
    ``normalize=False`` pixels are only scaled to [0, 1]. ``y2x`` is never
    rescaled: its point is the exact answer 2x.

    ``subset``/``test_subset`` keep a seeded random sample (not stratified) of
    the train/test split; a value at least the split's size keeps all of it.

    A name not in the table is your own data (``data.sources``): a function called with ``options``, or
    ``npz`` read from ``path``; its arrays are used as they are (no scaling) and standardised likewise.
    """
    import torch

    for label, k in (("subset", subset), ("test_subset", test_subset)):
        if k is not None:
            _check_int(label, k, 1, "a positive int or None")
    if name not in TABLE:
        return _own_splits(name, options or {}, path, subset, test_subset, normalize, seed, flatten)
    entry = dataset(name)
    x_train, y_train, x_test, y_test = entry.arrays(resolve_data_dir(data_dir))
    shape = tuple(int(d) for d in x_train.shape[1:])
    if shape != entry.input_shape:
        raise DataError(f"data set {name!r}: samples have shape {shape}, expected {entry.input_shape}")

    scale = np.float32(entry.scale)
    xs = [torch.from_numpy(np.asarray(x, dtype=np.float32) / scale) for x in (x_train, x_test)]
    label_dtype = np.int64 if entry.num_classes is not None else np.float32
    ys = [torch.from_numpy(np.asarray(y, dtype=label_dtype)) for y in (y_train, y_test)]
    if normalize and entry.standardize:
        xs = list(_standardized(*xs))
    return _tensor_splits(xs, ys, subset, test_subset, seed, flatten, entry.num_classes, name, entry.task)


def _tensor_splits(xs: list, ys: list, subset, test_subset, seed: int, flatten: bool, num_classes,
                   name: str, task: str) -> DatasetSplits:
    """Built-in and own arrays alike: the seeded subsets, then flattening, then the two TensorDatasets."""
    import torch
    from torch.utils.data import TensorDataset

    for split, k in enumerate((subset, test_subset)):
        idx = _subset_indices(len(xs[split]), k, seed, split)
        if idx is not None:
            ti = torch.from_numpy(idx)
            xs[split], ys[split] = xs[split][ti], ys[split][ti]
    input_shape = tuple(int(d) for d in xs[0].shape[1:])
    if flatten:
        xs = [x.reshape(len(x), -1) for x in xs]
        input_shape = (int(np.prod(input_shape)),)
    return DatasetSplits(
        train=TensorDataset(xs[0].contiguous(), ys[0]),
        test=TensorDataset(xs[1].contiguous(), ys[1]),
        num_classes=num_classes,
        input_shape=input_shape,
        name=name,
        task=task,
    )


def _own_splits(name: str, options: dict, path: str | None, subset, test_subset, normalize: bool, seed: int,
                flatten: bool) -> DatasetSplits:
    """Your own data as splits: four arrays become tensors (labels decide the task), two Datasets stay."""
    import torch
    from torch.utils.data import Dataset

    what = f"data {name!r}"
    out = sources.produce(name, options, path)
    if len(out) == 2:
        if not all(isinstance(d, Dataset) and hasattr(d, "__len__") for d in out):
            raise DataError(f"{what}: returned 2 items that are not both torch Datasets with a length; "
                            f"{sources.RETURNS}")
        if flatten:
            raise DataError(f"{what}: flatten is for arrays; flatten inside your Datasets")
        return _own_datasets(name, out, subset, test_subset, normalize, seed)
    xs, ys = [], []
    for label, value in zip(sources.NPZ_KEYS, out):
        try:
            arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        except Exception as exc:
            raise DataError(f"{what}: {label} is not an array ({type(value).__name__}: {exc})") from None
        (xs if label.startswith("x") else ys).append(arr)
    for split, x, y in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y) or not len(x):
            raise DataError(f"{what}: x_{split} {x.shape} and y_{split} {y.shape} must be samples x features "
                            "(or x channels x height x width) and one label per sample")
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"{what}: x_{split} has dtype {x.dtype}; inputs are numbers")
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise DataError(f"{what}: train samples have shape {xs[0].shape[1:]}, test samples {xs[1].shape[1:]}")
    integer = all(np.issubdtype(y.dtype, np.integer) for y in ys)
    if not integer and not all(np.issubdtype(y.dtype, np.floating) for y in ys):
        raise DataError(f"{what}: labels have dtype {ys[0].dtype}/{ys[1].dtype}; use integers (classes) or "
                        "floats (a regression target)")
    if integer and min(int(y.min()) for y in ys) < 0:
        raise DataError(f"{what}: class labels must be 0..classes-1, found {min(int(y.min()) for y in ys)}")
    classes = int(max(int(y.max()) for y in ys)) + 1 if integer else None
    tx = [torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs]
    ty = [torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64 if integer else np.float32)) for y in ys]
    if normalize:
        tx = list(_standardized(*tx))
    return _tensor_splits(tx, ty, subset, test_subset, seed, flatten, classes, name,
                          "classification" if integer else "regression")


def _own_datasets(name: str, pair, subset, test_subset, normalize: bool, seed: int) -> DatasetSplits:
    """(train, test) Datasets: shape and task from the first sample; classes from the Dataset's `classes`
    (torchvision's) or one pass over the training labels, which also gathers the channel statistics."""
    import torch
    from torch.utils.data import Subset

    train, test = pair
    x0, y0 = train[0]
    x0, y0 = torch.as_tensor(x0), torch.as_tensor(y0)
    integer = not torch.is_floating_point(y0)
    classes = len(train.classes) if integer and hasattr(train, "classes") else None
    stats = None
    if (integer and classes is None) or normalize:
        total = total_sq = top = count = 0
        for i in range(len(train)):
            x, y = train[i]
            x = torch.as_tensor(x, dtype=torch.float64)
            if normalize:
                dims = tuple(d for d in range(x.dim()) if d != 0) if x.dim() > 1 else ()
                total = total + (x.sum(dims) if dims else x)
                total_sq = total_sq + ((x * x).sum(dims) if dims else x * x)
                count += x[0].numel() if x.dim() > 1 else 1
            if integer:
                top = max(top, int(y))
        if integer and classes is None:
            classes = top + 1
        if normalize:
            mean = total / count
            std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
            std = torch.where(std > 0, std, torch.ones_like(std))
            shape = (-1,) + (1,) * (x0.dim() - 1) if x0.dim() > 1 else (-1,)
            stats = (mean.float().reshape(shape), std.float().reshape(shape))
    splits = [train, test]
    for split, k in enumerate((subset, test_subset)):
        idx = _subset_indices(len(splits[split]), k, seed, split)
        if idx is not None:
            splits[split] = Subset(splits[split], idx.tolist())
    if stats is not None:
        splits = [_Standardized(d, *stats) for d in splits]
    return DatasetSplits(splits[0], splits[1], classes, tuple(int(d) for d in x0.shape), name,
                         "classification" if integer else "regression")


class _Standardized:
    """A Dataset whose inputs are standardised per channel with the training split's statistics."""

    def __init__(self, data, mean, std):
        self.data, self.mean, self.std = data, mean, std

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        import torch

        x, y = self.data[i]
        return (torch.as_tensor(x, dtype=torch.float32) - self.mean) / self.std, y


class Indexed:
    """A Dataset whose items are ``(x, y, i)``: the wrapped item and its index in the wrapped Dataset.

    Fixed-point reuse keys its buffer on ``i``; the wrapped Dataset (a table's tensors, your own data
    function's arrays or Datasets) returns what it always did.
    """

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        x, y = self.data[i]
        return x, y, i


class FixedShardSampler:
    """Replica ``rank``'s share of ``n`` samples, the same samples every epoch, in a new order each epoch.

    The share is fixed once from ``seed`` (a seeded permutation, padded like DistributedSampler's so every
    replica takes the same number of steps, then every ``world_size``-th element), so a sample's previous
    z* is on the replica that sees it again (fixed-point reuse; a DistributedSampler reshuffles samples
    between replicas every epoch). ``set_epoch(k)`` reorders the share with ``(seed, k)``.
    """

    def __init__(self, n: int, rank: int, world_size: int, *, seed: int = 0, shuffle: bool = True):
        rng = np.random.default_rng([int(seed), 2])
        order = rng.permutation(n) if shuffle else np.arange(n)
        per = -(-n // world_size)
        order = np.resize(order, per * world_size)  # pad by repeating the start, as DistributedSampler does
        self.indices = order[rank::world_size]
        self.seed, self.shuffle, self.epoch = int(seed), shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        if not self.shuffle:
            return iter(self.indices.tolist())
        rng = np.random.default_rng([self.seed, 3, self.epoch])
        return iter(self.indices[rng.permutation(len(self.indices))].tolist())


def make_loaders(
    splits: DatasetSplits,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    shard: tuple[int, int] | None = None,
    pin_memory: bool = False,
    indexed: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders whose shuffling is driven by a seeded generator.

    The generator is owned by the train loader, so epoch k's order depends only
    on ``seed`` and k: the same seed replays the same batches. The test loader
    never shuffles. ``shard=(rank, world_size)`` gives replica ``rank`` its
    share of the training set (a DistributedSampler: call
    ``loader.sampler.set_epoch(k)`` each epoch); every replica sees the whole
    test set. ``pin_memory`` (training on CUDA) puts batches in page-locked host
    memory, so the `non_blocking` copies to the GPU are asynchronous.

    ``indexed=True`` (fixed-point reuse) makes both loaders yield ``(x, y, index)`` batches, the index
    being the sample's position in its split; a sharded train loader then keeps each replica's samples
    fixed across epochs (``FixedShardSampler``).
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    _check_int("batch_size", batch_size, 1, "a positive int")
    _check_int("num_workers", num_workers, 0, "an int >= 0")
    shared = dict(batch_size=int(batch_size), num_workers=int(num_workers), pin_memory=pin_memory)
    train_set, test_set = (Indexed(splits.train), Indexed(splits.test)) if indexed else (splits.train, splits.test)
    if shard is not None:
        rank, world_size = shard
        if not 0 <= rank < world_size:
            raise ValueError(f"shard rank must be in [0, {world_size}), got {rank}")
        if indexed:
            sampler = FixedShardSampler(len(train_set), rank, world_size, seed=seed, shuffle=shuffle)
        else:
            sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                         seed=int(seed))
        train = DataLoader(train_set, sampler=sampler, **shared)
    else:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
        train = DataLoader(train_set, shuffle=shuffle, generator=generator, **shared)
    return train, DataLoader(test_set, shuffle=False, **shared)
