"""Arrays to tensors: scaling, standardisation, seeded subsets, flattening, and the loaders.

torch is imported inside the functions, so ``import deqlab.data`` (``deqlab data
list``, ``deqlab data get``, a config check) stays free of it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Literal

import numpy as np

from .common import DataError, resolve_data_dir
from .table import dataset

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
    """Per-channel standardisation with the full training split's statistics (the test split never leaks in)."""
    import torch

    std, mean = torch.std_mean(x_train, dim=(0, 2, 3), correction=0, keepdim=True)
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
    """
    import torch
    from torch.utils.data import TensorDataset

    entry = dataset(name)
    for label, k in (("subset", subset), ("test_subset", test_subset)):
        if k is not None:
            _check_int(label, k, 1, "a positive int or None")
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
    for split, k in enumerate((subset, test_subset)):
        idx = _subset_indices(len(xs[split]), k, seed, split)
        if idx is not None:
            ti = torch.from_numpy(idx)
            xs[split], ys[split] = xs[split][ti], ys[split][ti]
    input_shape = entry.input_shape
    if flatten:
        xs = [x.reshape(len(x), -1) for x in xs]
        input_shape = (int(np.prod(input_shape)),)
    return DatasetSplits(
        train=TensorDataset(xs[0].contiguous(), ys[0]),
        test=TensorDataset(xs[1].contiguous(), ys[1]),
        num_classes=entry.num_classes,
        input_shape=input_shape,
        name=name,
        task=entry.task,
    )


def make_loaders(
    splits: DatasetSplits,
    batch_size: int,
    *,
    seed: int = 0,
    shuffle: bool = True,
    num_workers: int = 0,
    shard: tuple[int, int] | None = None,
    pin_memory: bool = False,
) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders whose shuffling is driven by a seeded generator.

    The generator is owned by the train loader, so epoch k's order depends only
    on ``seed`` and k: the same seed replays the same batches. The test loader
    never shuffles. ``shard=(rank, world_size)`` gives replica ``rank`` its
    share of the training set (a DistributedSampler: call
    ``loader.sampler.set_epoch(k)`` each epoch); every replica sees the whole
    test set. ``pin_memory`` (training on CUDA) puts batches in page-locked host
    memory, so the `non_blocking` copies to the GPU are asynchronous.
    """
    import torch
    from torch.utils.data import DataLoader, DistributedSampler

    _check_int("batch_size", batch_size, 1, "a positive int")
    _check_int("num_workers", num_workers, 0, "an int >= 0")
    shared = dict(batch_size=int(batch_size), num_workers=int(num_workers), pin_memory=pin_memory)
    if shard is not None:
        rank, world_size = shard
        if not 0 <= rank < world_size:
            raise ValueError(f"shard rank must be in [0, {world_size}), got {rank}")
        sampler = DistributedSampler(splits.train, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=int(seed))
        train = DataLoader(splits.train, sampler=sampler, **shared)
    else:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
        train = DataLoader(splits.train, shuffle=shuffle, generator=generator, **shared)
    return train, DataLoader(splits.test, shuffle=False, **shared)
