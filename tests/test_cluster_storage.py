"""A local --storage on a multi-node cluster: refused unless every node sees the same folder.

The second node runs in its own mount namespace with an empty tmpfs over the storage folder: the
folder exists there under the same path but is not the driver's, as on a cluster without shared disks.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from ray_cluster import two_node_cluster
from study_factory import TINY

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def _private_mount_works(folder) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs tmpfs '{folder}'"], capture_output=True)
    return probe.returncode == 0


def test_local_storage_not_shared_by_every_node_is_refused(tmp_path):
    local = tmp_path / "node-local"
    local.mkdir()
    if not _private_mount_works(local):
        pytest.skip("needs `unshare -m` (root or CAP_SYS_ADMIN) to give one node a disk of its own")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    own_disk = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                f"mount -t tmpfs tmpfs '{local}' && exec \"$0\" \"$@\"")
    raw = {"name": "scattered", "base": {**TINY, "epochs": 1}, "space": {"seed": {"grid": [0, 1]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    with two_node_cluster(env, worker_prefix=own_disk) as address:
        out = subprocess.run([sys.executable, "-m", "deqlab", "run", str(tmp_path / "s.yaml"), "--storage",
                              str(local / "res"), "--address", address], env=env, capture_output=True, text=True,
                             timeout=200)
    assert out.returncode == 2, out.stdout + out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: --storage {re.escape(str(local / 'res'))} is a local folder that 1 node\(s\) of "
                        r"the cluster do not share \([\d.]+ \(node [0-9a-f]{8}\)\): .*", error), error
    assert "s3://" in error
    assert not (local / "res" / "scattered").exists()  # refused before anything was written
    assert not list((local / "res").glob(".deqlab-shared-probe-*"))
