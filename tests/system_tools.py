"""Tests that drive a system tool (chromium, pdflatex) skip where it is missing, but fail under CI."""

import os

import pytest


def skip_or_fail_without(tool: str, hint: str) -> None:
    """Skip a test whose system tool is missing, except under `.ci/run`, which installs it: there it fails."""
    if os.environ.get("DEQLAB_REQUIRE_SYSTEM_TOOLS") or os.environ.get("CI"):
        pytest.fail(f"CI must run this test but {tool} is missing ({hint})")
    pytest.skip(f"{tool} not installed ({hint})")
