"""cluster.yaml's own start commands give a cluster that only the holder of its token can use.

A head and a worker are started on this machine with the commands read from `cluster.yaml`, each in an
empty home that holds only the token file `ray up` would copy there (its file mount), written 0644 as
`ray get-auth-token --generate` leaves it. The fixed ports become free ones and `ray start` gets `--block`
(to end the nodes by process group), the autoscaler (it reads the AWS config `ray up` writes) is left
out; the `ray stop` lines are never run: they end every Ray process on
the machine. Then the GCS is asked for its nodes and to write a key, without the token and with it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ray_cluster import free_port, stop_nodes

from deqlab.study.cluster import private_ray_token

ROOT = Path(__file__).resolve().parent.parent
BIN = str(Path(sys.executable).parent)

# One GCS call that reads (the nodes) and one that writes (a KV key); prints what the GCS answered.
GCS_CALLS = """
import sys
from ray._raylet import GcsClient
try:
    c = GcsClient(address=sys.argv[1])
    alive = sum(n.state == 0 for n in c.get_all_node_info(timeout=5).values())
    c.internal_kv_put(b"probe", b"written", True, b"deqlab-test", timeout=5)
    print(f"ok {alive} nodes")
except Exception as exc:
    print(f"refused {type(exc).__name__}: {exc}")
"""


def node_script(commands: list[str], ports: dict, extra: str) -> str:
    """One node's start commands as one bash script: its `ray stop` lines (each a list entry of its own)
    left out, the fixed ports replaced by free ones, `extra` arguments added to `ray start`."""
    kept = [c for c in commands if c.strip() != "ray stop"]
    script = "; ".join(kept)
    assert "ray stop" not in script and script.count("ray start") == 1, script
    for fixed, port in ports.items():
        assert fixed in script, (fixed, script)
        script = script.replace(fixed, port)
    return f"{script} {extra}"


def gcs_call(address: str, home: Path, token: str | None = None) -> str:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home)}
    env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {"RAY_AUTH_MODE": "disabled"})
    out = subprocess.run([sys.executable, "-c", GCS_CALLS, address], env=env, capture_output=True, text=True,
                         timeout=60)
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-500:]


def node_home(root: Path, name: str, token: str) -> Path:
    """An empty home holding only the token file, as the file mount leaves it (copied with its mode)."""
    home = root / name
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text(token)
    os.chmod(home / ".ray" / "auth_token", 0o644)
    return home


def start(script: str, home: Path) -> subprocess.Popen:
    """A node in its own process group (ended with it: never `ray stop`)."""
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "RAY_HEAD_IP": "127.0.0.1",
           "RAY_USAGE_STATS_ENABLED": "0"}
    with open(home / "start.log", "w") as log:
        return subprocess.Popen(["bash", "-c", script], env=env, start_new_session=True, stdout=log,
                                stderr=subprocess.STDOUT)


@pytest.mark.ray
def test_cluster_from_cluster_yaml_refuses_a_call_without_its_token(tmp_path):
    with open(ROOT / "cluster.yaml") as f:
        config = yaml.safe_load(f)
    head_cmds, worker_cmds = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    for script in (" ".join(head_cmds), " ".join(worker_cmds)):
        assert "export RAY_AUTH_MODE=token" in script and "0.0.0.0" not in script
    assert "--dashboard-host=127.0.0.1" in " ".join(head_cmds)  # reached through `ray dashboard` (SSH) only
    port, dash = free_port(), free_port()
    token = secrets.token_hex(32)
    head_home, worker_home = node_home(tmp_path, "head", token), node_home(tmp_path, "worker", token)
    nobody = tmp_path / "nobody"
    nobody.mkdir()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    local = lambda: (f"--block --num-cpus=1 --node-ip-address=127.0.0.1 --metrics-export-port={free_port()} "  # noqa: E731
                     f"--dashboard-agent-listen-port={free_port()}")
    head = node_script(head_cmds, {"--port=6379": f"--port={port}",
                                   # the autoscaler reads the launcher's AWS config, which `ray up` writes there
                                   "--autoscaling-config=~/ray_bootstrap_config.yaml": "",
                                   "--object-manager-port=8076": f"--object-manager-port={free_port()}"},
                       f"{local()} --temp-dir={temp} --dashboard-port={dash} --ray-client-server-port={free_port()}")
    worker = node_script(worker_cmds, {":6379": f":{port}",
                                       "--object-manager-port=8076": f"--object-manager-port={free_port()}"},
                         local())
    address, nodes = f"127.0.0.1:{port}", []
    try:
        nodes.append(start(head, head_home))
        wait_for(lambda: gcs_call(address, nobody, token) == "ok 1 nodes", "the head", log=head_home / "start.log")
        nodes.append(start(worker, worker_home))
        wait_for(lambda: gcs_call(address, nobody, token) == "ok 2 nodes", "the worker", log=worker_home / "start.log")
        for answer in (gcs_call(address, nobody), gcs_call(address, nobody, secrets.token_hex(32))):
            assert answer.startswith("refused AuthenticationError") and "InvalidAuthToken" in answer, answer
        for home in (head_home, worker_home):  # the start commands made the copied token private
            assert stat.S_IMODE((home / ".ray" / "auth_token").stat().st_mode) == 0o600
    finally:
        stop_nodes(nodes)
        shutil.rmtree(temp, ignore_errors=True)


def wait_for(check, what: str, timeout: float = 90, log: Path | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(1)
    pytest.fail(f"{what} never came up" + (f"; its log ends: {log.read_text()[-3000:]}" if log else ""))


def test_the_token_of_a_local_ray_is_private(tmp_path, monkeypatch):
    """What `deqlab run` does before `ray.init`: Ray would write a missing token with the umask's mode (0644)."""
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    token = tmp_path / ".ray" / "auth_token"
    private_ray_token(create=False)  # joining a cluster: no token of our own invented
    assert not token.exists()
    private_ray_token(create=True)  # a local Ray: created 0600, as Ray's own generator would fill it
    text = token.read_text()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(text) == 64 and int(text, 16) >= 0
    os.chmod(token, 0o644)  # written earlier by Ray itself
    private_ray_token(create=False)
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and token.read_text() == text  # the same token, private
