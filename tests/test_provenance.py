"""Every trial row says where it ran; `deqlab export` warns when one row mixes hardware and can group by it."""

import io
import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch
from study_factory import metrics, params, write_trial

from deqlab import __version__
from deqlab.cli import main
from deqlab.run.machine import COLUMNS

REPO = Path(__file__).resolve().parent.parent


def _expected_code_version() -> str:
    if not (REPO / ".git").exists():
        return f"deqlab=={__version__}"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return f"git:{head}"


def test_a_trained_trial_records_machine_versions_and_commit(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("epochs: 1\ndata: {name: digits, batch_size: 64, subset: 200, test_subset: 100}\n"
                   "model: {name: mlp, options: {width: 16, inner: 32}}\n")
    assert main(["train", str(cfg), "--storage", str(tmp_path / "res"), "--quiet"]) == 0
    (file,) = (tmp_path / "res" / "tiny" / "trials").glob("*.parquet")
    row = pd.read_parquet(file).iloc[-1]
    assert set(COLUMNS) <= set(row.index)
    assert row.hostname == socket.gethostname() and row.cpu_count == os.cpu_count()
    assert row.python_version == platform.python_version() and row.torch_version == torch.__version__
    assert row.ray_version == metadata.version("ray") and row.optuna_version == metadata.version("optuna")
    assert row.torchdiffeq_version == metadata.version("torchdiffeq")
    assert row.gpu_count == torch.cuda.device_count()
    assert row.code_version.removesuffix("+dirty") == _expected_code_version()
    assert row.hardware.startswith(f"{row.cpu_model} x{os.cpu_count()}")
    if torch.cuda.is_available():  # on a GPU machine: name, memory, CUDA and driver versions
        assert row.gpu_name == torch.cuda.get_device_name(0) and row.cuda_version == torch.version.cuda
        assert row.gpu_memory_gb > 0 and row.gpu_driver
        assert f"x {row.gpu_name}" in row.hardware
    else:
        assert row.gpu_name is None and row.cuda_version is None and row.gpu_memory_gb is None


def test_installed_copy_records_its_version_not_a_commit(tmp_path):
    shutil.copytree(REPO / "deqlab", tmp_path / "deqlab", ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([sys.executable, "-c", "from deqlab.run.machine import code_version; print(code_version())"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True)
    assert out.stdout.strip() == f"deqlab=={__version__}", out.stderr


def _two_machines(root):
    """skip/anderson trials from two kinds of hardware (2 each), zeros/anderson from one."""
    for i, (init, hw, acc) in enumerate([("skip", "cpu A", 0.9), ("skip", "cpu A", 0.92), ("skip", "gpu B", 0.8),
                                         ("skip", "gpu B", 0.82), ("zeros", "cpu A", 0.7)]):
        w = write_trial(root, "mixed", f"t{i}", params(init, "anderson", i), [metrics(acc, 10.0, 1.0)], "completed")
        frame = pd.DataFrame(w.rows).assign(hardware=hw)
        frame.to_parquet(root / "mixed" / "trials" / f"t{i}.parquet")
    return root / "mixed"


def test_export_warns_when_a_row_pools_hardware_and_groups_by_it(tmp_path, capsys):
    study = _two_machines(tmp_path)
    assert main(["export", str(study), "--by", "init", "--metrics", "test_acc", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: row init=skip pools 4 trials from 2 kinds of hardware (cpu A; gpu B): its times "
                        "are not comparable; --by init,hardware splits them"]
    assert main(["export", str(study), "--by", "init,hardware", "--metrics", "test_acc", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    table = pd.read_csv(io.StringIO(captured.out))
    assert sorted(zip(table["init"], table["hardware"])) == [("skip", "cpu A"), ("skip", "gpu B"), ("zeros", "cpu A")]
    means = dict(zip(zip(table["init"], table["hardware"]), table.filter(like="test_acc").iloc[:, 0]))
    assert means[("skip", "gpu B")] == pytest.approx(81.0) and means[("skip", "cpu A")] == pytest.approx(91.0)  # %
