"""Tests that drive a system tool (chromium, pdflatex) skip where it is missing, but fail under CI."""

import os
import subprocess
from contextlib import contextmanager

import pytest


def skip_or_fail_without(tool: str, hint: str) -> None:
    """Skip a test whose system tool is missing, except under `.ci/run`, which installs it: there it fails."""
    if os.environ.get("DEQLAB_REQUIRE_SYSTEM_TOOLS") or os.environ.get("CI"):
        pytest.fail(f"CI must run this test but {tool} is missing ({hint})")
    pytest.skip(f"{tool} not installed ({hint})")


@contextmanager
def tmpfs(folder, size: str):
    """A small tmpfs mounted at `folder` (created), a disk that fills on demand; skips where mounting is
    not allowed (it needs root or CAP_SYS_ADMIN, which CI has)."""
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def stop(proc: subprocess.Popen) -> None:
    """End a server the test started: SIGTERM, 15 s to exit, then SIGKILL."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
