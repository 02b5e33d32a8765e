"""A two-node Ray cluster on this machine (two `ray start` processes), for the multi-node tests."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def two_node_cluster(env: dict, worker_prefix: tuple = ()):
    """Yield the address of a head + one worker node, 1 CPU each; `worker_prefix` wraps the worker's
    `ray start` (e.g. in another mount namespace)."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    nodes = []

    def start(*args, prefix=()):
        nodes.append(subprocess.Popen([*prefix, ray_bin, "start", "--block", "--num-cpus=1", *args], env=env,
                                      start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    address = f"127.0.0.1:{port}"
    try:
        start("--head", "--include-dashboard=false", f"--port={port}", "--node-ip-address=127.0.0.1",
              f"--temp-dir={temp_dir}")
        wait_for_nodes(address, 1, env)
        start(f"--address={address}", "--node-ip-address=127.0.0.1", prefix=worker_prefix)
        wait_for_nodes(address, 2, env)
        yield address
    finally:
        stop_nodes(nodes)
        shutil.rmtree(temp_dir, ignore_errors=True)


def stop_nodes(nodes) -> None:
    """End `ray start --block` nodes by their process groups (never `ray stop`: it ends every Ray process on
    the machine): SIGTERM, 2 s in all to wind down (it can take 30; the test is over and nothing waits on a
    graceful stop), then SIGKILL for every process of their sessions, Ray's workers included."""
    for p in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.time() + 2
    for p in nodes:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            kill_session(p.pid)
            p.wait(timeout=30)


def kill_session(leader: int) -> None:
    """SIGKILL a process started with `start_new_session` and every process of its session, as a crash would.

    Its process group is not enough: Ray's worker processes (the trials among them) move to process groups
    of their own and would go on running, and writing, for a while. They stay in the leader's session.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader, signal.SIGKILL)
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            session = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3])  # state ppid pgrp session
        except (OSError, ValueError, IndexError):
            continue
        if session == leader:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def wait_for_nodes(address: str, n: int, env: dict, timeout: float = 90) -> None:
    code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
            "print(sum(x['Alive'] for x in ray.nodes()))")
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], env=env, capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    pytest.fail(f"the cluster at {address} never had {n} nodes")
