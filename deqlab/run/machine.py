"""Where a trial ran: hardware, host, library versions and the code's commit, on every row it writes.

Times and NFE are only comparable between trials of the same hardware; a study
on a cluster mixes node types, and a results root can gather runs from several
machines. `hardware` summarises the rest in one column, which `deqlab export
--by hardware` can group by and whose mixing inside one table row it warns of.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

COLUMNS = ("hostname", "hardware", "cpu_model", "cpu_count", "gpu_name", "gpu_count", "gpu_memory_gb",
           "cuda_version", "gpu_driver", "python_version", "optuna_version", "torchdiffeq_version", "code_version")


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)  # without importing it
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict:
    """The GPUs this process sees (CUDA_VISIBLE_DEVICES applies: a Ray trial sees its own)."""
    if not torch.cuda.is_available():
        return {"gpu_name": None, "gpu_count": 0, "gpu_memory_gb": None, "cuda_version": None, "gpu_driver": None}
    props = torch.cuda.get_device_properties(0)
    return {"gpu_name": props.name, "gpu_count": torch.cuda.device_count(),
            "gpu_memory_gb": round(props.total_memory / 2**30, 1), "cuda_version": torch.version.cuda,
            "gpu_driver": _nvidia_driver()}


def _nvidia_driver() -> Optional[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """`git:<commit>[+dirty]` of a checkout, else `deqlab==<version>` of an installed package."""
    from .. import __version__

    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=10)
            if commit.returncode == 0:
                dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD", "--", "deqlab"],
                                       capture_output=True, timeout=10).returncode == 1
                return f"git:{commit.stdout.strip()}" + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            pass
    return f"deqlab=={__version__}"


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """This process's machine and software (computed once per process: git and nvidia-smi take ~10 ms)."""
    gpus = gpu_info()
    cpu = {"cpu_model": cpu_model(), "cpu_count": os.cpu_count()}
    hardware = f"{cpu['cpu_model']} x{cpu['cpu_count']}"
    if gpus["gpu_count"]:
        hardware += f" + {gpus['gpu_count']}x {gpus['gpu_name']} ({gpus['gpu_memory_gb']:g} GiB)"
    return {"hostname": socket.gethostname(), "hardware": hardware, **cpu, **gpus,
            "python_version": platform.python_version(), "optuna_version": _version("optuna"),
            "torchdiffeq_version": _version("torchdiffeq"), "code_version": code_version()}


__all__ = ["COLUMNS", "environment", "code_version"]
