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
``npz`` (with ``path``), ``"package.module:function"``, an entry point in ``deqlab.datasets``
    your own data (``sources``): four arrays or two torch Datasets, shape and classes read from them.

``DATA_DIR`` is the ``data_dir`` argument, else ``$DEQLAB_DATA``, else
``$XDG_CACHE_HOME/deqlab/data`` (``~/.cache/deqlab/data``).

The package is a low layer: it imports nothing else from deqlab, and torch only
inside ``load_dataset``/``make_loaders``. Its parts: ``table`` (one entry per data
set: read, fetch, status, input shape, classes), ``formats`` (IDX, CIFAR pickles,
embedded sets), ``fetching`` (sources, checksums, atomic placement), ``loading``
(tensors and loaders), ``common`` (the error, the data folder).

Example::

    splits = load_dataset("digits", subset=500)
    train_loader, test_loader = make_loaders(splits, batch_size=32, seed=0)
"""

from __future__ import annotations

from .common import DataError, default_data_dir, resolve_data_dir
from .fetching import CHECKSUMS
from .formats import read_idx
from .loading import DatasetSplits, load_dataset, make_loaders
from .sources import NPZ
from .table import DATASETS, TABLE, Dataset, dataset, fetch, status

__all__ = [
    "CHECKSUMS",
    "DATASETS",
    "TABLE",
    "DataError",
    "NPZ",
    "Dataset",
    "DatasetSplits",
    "dataset",
    "default_data_dir",
    "fetch",
    "load_dataset",
    "make_loaders",
    "read_idx",
    "resolve_data_dir",
    "status",
]
