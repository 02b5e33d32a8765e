"""What a study needs from a Ray cluster that Ray does not check: importable code and shared storage.

Ray puts the driver's working directory on every worker's `sys.path`. Started
from a folder holding a checkout named `deqlab/` (the cluster recipe runs
`deqlab run deqlab/studies/...` from the home directory), that checkout's root,
which has no `__init__.py`, is found as an empty namespace package before the
editable install's import hook is consulted, and every trial fails with
`cannot import name '__version__' from 'deqlab' (unknown location)`. The driver
therefore joins Ray from the folder that holds the real package, which resolves
to deqlab itself wherever it is on a worker's path.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def package_parent() -> str:
    """The folder holding the `deqlab` package this process imported (site-packages or a checkout root)."""
    import deqlab

    return str(Path(deqlab.__file__).resolve().parent.parent)


@contextlib.contextmanager
def code_path_for_workers():
    """Run `ray.init` from the package's parent folder, so that is what Ray adds to the workers' paths."""
    before = os.getcwd()
    os.chdir(package_parent())
    try:
        yield
    finally:
        os.chdir(before)


__all__ = ["code_path_for_workers", "package_parent"]


# --------------------------------------------------------------------------- is a local --storage shared?


def _probe(marker: str, token: str, node: str) -> bool:
    """On one node: read the driver's marker, then answer with a file of this node's own."""
    try:
        with open(marker) as f:
            if f.read() != token:
                return False
        with open(f"{marker}.{node}", "w") as f:
            f.write(token)
        return True
    except OSError:
        return False


def unshared_nodes(storage: str, timeout_s: float = 120.0) -> list[str]:
    """Alive nodes of the connected Ray cluster that do not share the local folder `storage` with the
    driver: a probe task pinned to each node must read a marker the driver wrote there, and the driver
    must read the node's answer. One node: nothing to check."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) < 2:
        return []
    os.makedirs(storage, exist_ok=True)
    token = uuid.uuid4().hex
    marker = os.path.join(storage, f".deqlab-shared-probe-{token}")
    with open(marker, "w") as f:
        f.write(token)
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        refs = {n["NodeID"]: probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(marker, token, n["NodeID"]) for n in nodes}
        seen = dict(zip(refs, ray.get(list(refs.values()), timeout=timeout_s)))
        answered = {node for node, ok in seen.items() if ok and _reads(f"{marker}.{node}", token)}
    finally:
        for path in [marker] + [f"{marker}.{n['NodeID']}" for n in nodes]:
            with contextlib.suppress(OSError):
                os.remove(path)
    return [f"{n['NodeManagerAddress']} (node {n['NodeID'][:8]})" for n in nodes if n["NodeID"] not in answered]


def _reads(path: str, token: str) -> bool:
    try:
        with open(path) as f:
            return f.read() == token
    except OSError:
        return False


def refuse_unshared_storage(storage: str) -> None:
    """A local --storage on a multi-node cluster must be one folder for every node, else each trial's
    results land on the disk of whichever node ran it and the driver sees none of them."""
    from .spec import StudyError

    missing = unshared_nodes(storage)
    if missing:
        raise StudyError(f"--storage {storage} is a local folder that {len(missing)} node(s) of the cluster do not "
                         f"share ({', '.join(missing)}): their trials' results would stay on their own disks. Use "
                         "object storage (--storage s3://BUCKET/deqlab, or DEQLAB_STORAGE) or a filesystem mounted "
                         "at this path on every node")


__all__ += ["unshared_nodes", "refuse_unshared_storage"]


# --------------------------------------------------------------------------- the Ray token


def private_ray_token(create: bool) -> None:
    """The token file of Ray's authentication, readable by its owner only (0600).

    `ray.init` of a new local cluster writes ~/.ray/auth_token with the umask's mode (0644 usually):
    any user of the machine could read it and use this user's Ray. So before a local Ray starts
    (`create`), a missing token file is created 0600 (a token as Ray generates one: 256 random bits in
    hex), and before any start or join one of ours that others may read is made 0600. Nothing to do
    where the token comes from RAY_AUTH_TOKEN or authentication is off.
    """
    import secrets

    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled" or os.environ.get("RAY_AUTH_TOKEN"):
        return
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if path.exists():
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, 0o600)
    elif create:  # joining a cluster: its token is the one to use, never a new one
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError), os.fdopen(
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(secrets.token_hex(32))


__all__ += ["private_ray_token"]
