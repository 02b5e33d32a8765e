"""The `deqlab` command line: demo, data get/list, --version, error handling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from deqlab import __version__, cli
from deqlab.cli import main
from deqlab.data import DATASETS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m deqlab ARGS` in a fresh interpreter, as a user would run it."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "deqlab", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_demo_prints_table_and_writes_png(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--steps", "200", "--inits", "zeros,skip", "--solvers", "anderson",
               "--workers", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    lines = captured.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("init"))
    for word in ("solver", "pred(-5)", "|error|", "fwd NFE", "train s"):
        assert word in lines[header]
    body = lines[header + 2: header + 4]
    assert [line.split()[:2] for line in body] == [["zeros", "anderson"], ["skip", "anderson"]]
    for line in body:
        assert abs(float(line.split()[2]) + 10) < 0.5
    png = out / "trajectories.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert str(png) in captured.out
    assert lines[-1].startswith("seed check passed")


def test_demo_subprocess_exits_0(tmp_path):
    proc = run_cli("demo", "--out", str(tmp_path), "--steps", "200", "--inits", "zeros", "--solvers", "anderson")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "zeros" in proc.stdout and "seed check passed" in proc.stdout
    assert (tmp_path / "trajectories.png").stat().st_size > 0


def test_demo_exits_1_when_the_check_fails(tmp_path, capsys):
    # one Adam step cannot learn y = 2x: the table is still printed, the verdict says FAILED
    rc = main(["demo", "--out", str(tmp_path), "--steps", "1", "--inits", "zeros", "--solvers", "anderson"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "NO" in out and out.splitlines()[-1].startswith("seed check FAILED")


def test_demo_bad_input_is_one_line_error(tmp_path, capsys):
    rc = main(["demo", "--out", str(tmp_path), "--inits", "zeros,nope"])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.err.strip().splitlines() == ["error: unknown init 'nope'; valid: zeros, skip, skipreg"]
    assert captured.out == ""


def test_data_get_unknown_name_exits_2_without_traceback():
    proc = run_cli("data", "get", "nosuch")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: unknown data set 'nosuch'")
    assert "Traceback" not in proc.stderr


def test_data_get_data_error_is_one_line(tmp_path, capsys):
    rc = main(["data", "get", "cifar10", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("error: CIFAR-10 cannot be fetched automatically")


def test_data_get_builtin(tmp_path, capsys):
    assert main(["data", "get", "y2x", "--data-dir", str(tmp_path)]) == 0
    assert "y2x: ready in" in capsys.readouterr().out


def test_data_list_shows_every_dataset_and_presence(tmp_path, capsys):
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    (mnist / "train-images-idx3-ubyte").write_bytes(b"x")
    (mnist / "train-labels-idx1-ubyte.gz").write_bytes(b"x")  # raw or .gz both count
    fashion = tmp_path / "fashion_mnist"
    fashion.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (fashion / f"{stem}.gz").write_bytes(b"x")
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("your own: data: {name: \"package.module:function\"")
    status = {line.split()[0]: line for line in out.splitlines()[2:-1]}
    assert set(status) == set(DATASETS) | {"npz"}  # no plugin installed here
    assert "your file" in status["npz"]
    assert "built in" in status["digits"] and "built in" in status["y2x"]
    assert "partial (2/4 files)" in status["mnist"] and "deqlab data get mnist" in status["mnist"]
    assert "present" in status["fashion_mnist"]
    assert "missing" in status["cifar10"]


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"deqlab {__version__}"


def test_console_script_version():
    script = Path(sys.executable).parent / "deqlab"
    if not script.exists():
        pytest.skip("console script not installed in this environment")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"deqlab {__version__}"


def test_missing_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
    assert "usage: deqlab" in capsys.readouterr().err


def test_registry_refuses_duplicates():
    assert {"demo", "data"} <= set(cli.COMMANDS)
    with pytest.raises(ValueError, match="already registered"):
        cli.register_command("demo", "again", lambda p: None, lambda a: 0)


def test_train_command_writes_results(tmp_path, capsys):
    import pandas as pd

    from deqlab.cli import main

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "epochs: 1\n"
        "data: {name: digits, batch_size: 64, subset: 300}\n"
        "model: {name: mlp, options: {width: 16, inner: 32}}\n"
        "deq: {init: skipreg, solver: broyden, tol: 1.0e-3}\n"
    )
    assert main(["train", str(cfg), "--storage", str(tmp_path / "res"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tiny/train-" in out and "completed" in out
    files = list((tmp_path / "res" / "tiny" / "trials").glob("*.parquet"))
    assert len(files) == 1
    rows = pd.read_parquet(files[0])
    assert list(rows["status"]) == ["completed"] and rows["param.deq.solver"].iloc[0] == "broyden"
    # the run's TrainConfig goes to train.yaml: study.yaml is only ever a study spec
    assert (tmp_path / "res" / "tiny" / "train.yaml").is_file()
    assert not (tmp_path / "res" / "tiny" / "study.yaml").exists()


@pytest.mark.parametrize("text,match", [
    ("epochs: [1\n", "not valid YAML"),
    ("epochz: 1\n", "epochz"),
    ("deq: {solver: lbfgs}\n", "valid solvers"),
])
def test_train_command_rejects_bad_config_in_one_line(tmp_path, capsys, text, match):
    from deqlab.cli import main

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    assert main(["train", str(cfg), "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err and "Traceback" not in err and err.count("\n") == 1
