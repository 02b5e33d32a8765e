"""The file formats, read into numpy arrays: IDX (MNIST-style), CIFAR-10 pickles, embedded sets.

Every reader returns ``(x_train, y_train, x_test, y_test)`` with images channel first,
and raises :class:`DataError` naming the file when the bytes are wrong, so a bad
download fails here rather than as a shape error in training. Readers assume the
files exist; the table checks that first and says how to get them.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np

from .common import DataError

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

#: (images, labels) file stems of each split; each file may be raw or ".gz".
IDX_SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: The CIFAR-10 "python version" batches, inside ``CIFAR_SUBDIR``; the last is the test split.
CIFAR_SUBDIR = "cifar-10-batches-py"
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)

# The digits test set must not move when a study varies `seed`.
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_SIZE = 360
# x = 1..10 is the article's training set; -5 (expect -10) is the probe it prints,
# the rest check interpolation and extrapolation.
_Y2X_TEST_X = (-5.0, 0.0, 5.5, 12.0)


# --------------------------------------------------------------------------- IDX


def idx_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Each IDX stem with the two paths that hold it (raw first, then gzipped)."""
    stems = [stem for pair in IDX_SPLITS.values() for stem in pair]
    return {stem: (folder / stem, folder / f"{stem}.gz") for stem in stems}


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


def read_idx_set(folder: Path) -> Arrays:
    """The four IDX files of ``folder`` (a raw file wins over its .gz), images as (N, 1, H, W)."""
    found = {stem: raw if raw.is_file() else gz for stem, (raw, gz) in idx_files(folder).items()}
    out = []
    for images_stem, labels_stem in IDX_SPLITS.values():
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


def read_cifar10(folder: Path) -> Arrays:
    """The five training batches and the test batch of ``folder`` (the batches folder)."""
    parts = [_cifar_batch(folder / n) for n in CIFAR_BATCHES[:-1]]
    x_test, y_test = _cifar_batch(folder / CIFAR_BATCHES[-1])
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------- embedded


def _digits_table() -> np.ndarray:
    """scikit-learn's digits.csv.gz (64 pixels and the label per row), read without importing scikit-learn:
    its import costs every driver and trial about 1.5 s, the file 0.2 s. Falls back to `load_digits`."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz") if spec else None
    if path is None or not path.is_file():
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
    with gzip.open(path) as fh:
        cells = fh.read().replace(b"\n", b",").rstrip(b",").split(b",")
    return np.asarray(cells, dtype=np.float64).reshape(-1, 65)


def digits_arrays() -> Arrays:
    """scikit-learn's 8x8 digits, values 0..16, split by a seed no study varies."""
    table = _digits_table()
    images = table[:, :64].reshape(-1, 1, 8, 8).astype(np.float32)  # (1797, 1, 8, 8), values 0..16
    labels = table[:, 64].astype(np.int64)
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(labels))
    test_idx, train_idx = order[:_DIGITS_TEST_SIZE], order[_DIGITS_TEST_SIZE:]
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


def y2x_arrays() -> Arrays:
    """y = 2x on x = 1..10 (train) and the probes of ``_Y2X_TEST_X`` (test), as float32 columns."""
    x_train = np.arange(1, 11, dtype=np.float32).reshape(-1, 1)
    x_test = np.asarray(_Y2X_TEST_X, dtype=np.float32).reshape(-1, 1)
    return x_train, 2 * x_train, x_test, 2 * x_test
