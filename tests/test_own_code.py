"""Your own model and data (issue 27): the example study run as a user runs it, refusals before Ray, NFE
against a counting wrapper around the user's cell, npz files and Dataset-returning functions, entry points.

The example (examples/own_model/) is copied to a folder of its own and run from another working directory
with nothing of it on PYTHONPATH: the study's folder is what finds `gated.py` and `spirals.py`, and Ray's
runtime_env what ships them to the trials.
"""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from deqlab import plugins
from deqlab.cli import main
from deqlab.results import load, load_states

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "own_model"


def deqlab(*args, cwd, timeout=300):
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "PYTHONPATH": str(REPO),
           "RAY_AUTH_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "deqlab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def module_hash(*files: Path) -> str:
    """deqlab's source hash of a one-file module, computed here from its bytes."""
    (f,) = files
    return hashlib.sha256(f.name.encode() + b"\0" + f.read_bytes() + b"\0").hexdigest()[:16]


@pytest.mark.ray
@pytest.mark.timeout(400)
def test_the_example_study_runs_from_another_folder_and_learns(tmp_path):
    lab, elsewhere = tmp_path / "lab", tmp_path / "elsewhere"
    shutil.copytree(EXAMPLE, lab)
    elsewhere.mkdir()
    out = deqlab("run", str(lab / "study.yaml"), "--storage", "results", "--num-cpus", "2", cwd=elsewhere)
    assert out.returncode == 0, out.stdout + out.stderr
    path = elsewhere / "results" / "own_model"
    rows = load(path).trials
    final = rows.sort_values("epoch").groupby("trial_id").tail(1)
    assert len(final) == 4 and (final.status == "completed").all(), final[["trial_id", "status", "error"]]
    assert set(zip(final["param.deq.solver"], final["param.deq.init"])) == {
        (s, i) for s in ("anderson", "broyden") for i in ("zeros", "skip")}
    assert (final.test_acc > 0.55).all(), final.test_acc  # 3 arms: chance is 1/3
    assert (final.converged_frac > 0.5).all() and (final.nfe_fwd > 1).all()
    # provenance: the import paths and the hashes of the very files that ran
    assert set(rows["param.model.name"]) == {"gated:GatedDEQ"} and set(rows["param.data.name"]) == {"spirals:spirals"}
    assert set(rows.model_source_hash) == {module_hash(lab / "gated.py")}
    assert set(rows.data_source_hash) == {module_hash(lab / "spirals.py")}
    # fixed-depth pretraining (4 applications + the residual report) and the states over depth
    pre = rows[rows.phase == "pretrain"]
    assert len(pre) == 4 and (pre.nfe_fwd == 5).all() and (pre.nfe_bwd == 4).all()
    for trial in final.trial_id:
        states = load_states(str(path), trial)
        assert sorted(states.step.unique()) == list(range(7)) and len(states.state.iloc[0]) == 32

    # reading results imports none of the user's code (nor could it: nothing of lab/ is on the path)
    probe = (
        "import sys\n"
        "tried = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        tried.append(name) if name.split('.')[0] in ('gated', 'spirals') else None\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from deqlab.cli import main\n"
        "from deqlab.report import views\n"
        "from deqlab.results import load, load_states\n"
        f"assert main(['ls', {str(elsewhere / 'results')!r}]) == 0\n"
        f"assert main(['export', {str(path)!r}, '--format', 'markdown']) == 0\n"
        f"dirs = views.study_dirs([{str(elsewhere / 'results')!r}])\n"
        "frame = load(dirs).trials\n"
        "assert len(load_states(dirs[0], frame.trial_id.iloc[0])) > 0\n"
        "print('tried', tried)\n")
    read = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert read.returncode == 0, read.stderr
    assert "tried []" in read.stdout and "own_model: 4 trials (4 completed" in read.stdout

    # a resume with a changed module is refused before Ray, in one line; allowed, it goes on
    (lab / "gated.py").write_text((lab / "gated.py").read_text() + "\n# changed\n")
    refused = deqlab("resume", "own_model", "--storage", "results", "--num-cpus", "2", cwd=elsewhere)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    (line,) = refused.stderr.strip().splitlines()
    assert re.fullmatch(r"error: study 'own_model': your code changed since its trials ran: model gated:GatedDEQ "
                        rf"\({module_hash(EXAMPLE / 'gated.py')} -> {module_hash(lab / 'gated.py')}\); .*"
                        r"resume with --allow-changed-code .*", line), line
    allowed = deqlab("resume", "own_model", "--storage", "results", "--num-cpus", "2", "--allow-changed-code",
                     cwd=elsewhere)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "warning: resuming own_model with changed code: model gated:GatedDEQ" in allowed.stdout
    assert "4 finished trials kept" in allowed.stdout


# --------------------------------------------------------------------------- NFE of the user's cell

def test_forward_and_backward_nfe_equal_a_counting_wrapper_around_the_users_cell():
    from test_nfe_counts import Counting, Counts

    from deqlab.data import load_dataset
    from deqlab.run import TrainConfig
    from deqlab.run.loop import _train_epoch, evaluate, model_for

    plugins.add_folder(EXAMPLE)
    data = {"name": "spirals:spirals", "options": {"n_train": 96, "n_test": 40}, "batch_size": 32}
    cases = (("zeros", 0.0, "implicit"), ("skip", 0.0, "implicit"), ("skipreg", 1.0, "implicit"),  # DEQ, SkipDEQ,
             ("zeros", 0.0, "phantom"), ("skip", 0.0, "unrolled"))  # SkipRegDEQ + Jacobian reg.; other gradients
    for init, jac, backward in cases:
        cfg = TrainConfig(seed=0, epochs=1, data=data, model={"name": "gated:GatedDEQ", "options": {"width": 8}},
                          deq={"solver": "broyden", "tol": 1e-3, "stop_mode": "batch", "init": init, "jac_weight": jac,
                               "backward": backward})
        splits = load_dataset(cfg.data.name, options=cfg.data.options, seed=0)
        assert splits.input_shape == (2,) and splits.num_classes == 3 and len(splits.train) == 96
        torch.manual_seed(0)
        model = model_for(cfg, splits)
        assert (model.deq.skip_net is not None) == (init == "skip")
        model.deq.f = Counting(model.deq.f)
        train_loader = torch.utils.data.DataLoader(splits.train, batch_size=32)
        test_loader = torch.utils.data.DataLoader(splits.test, batch_size=40)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for depth in (3, None):  # a pretraining epoch at fixed depth, then a DEQ epoch
            model.set_fixed_depth(depth)
            Counts.reset()
            m = _train_epoch(model, train_loader, opt, None, cfg, torch.device("cpu"))
            probes = 3 if jac and not depth else 0  # one Jacobian probe per batch: its VJP, and its backward
            assert m["train_nfe_fwd"] * 3 == Counts.fwd > 0
            assert m["nfe_bwd"] * 3 == Counts.vjp - probes > 0
            assert m["nfe_jac"] * 3 == 2 * probes and Counts.second == probes
            if depth:
                assert Counts.fwd == 3 * (depth + 1 + (init == "skipreg"))  # applications, residual, f(0, x)
            elif backward != "implicit":
                assert m["nfe_bwd"] == 5  # the default steps of phantom and unrolled gradients
            Counts.reset()
            t = evaluate(model, test_loader, torch.device("cpu"))
            assert t["nfe_fwd"] == Counts.fwd > 0  # one test batch


# --------------------------------------------------------------------------- refused before Ray, in one line

STUDY = {"name": "mine", "space": {"seed": {"grid": [0]}}, "objectives": [{"metric": "test_acc", "mode": "max"}],
         "search": {"algorithm": "grid"}}
CELL = '''
import torch
from torch import nn
from deqlab.layers import DEQ
from deqlab.models import DEQModel, Model

class Net(DEQModel):
    def __init__(self, input_shape, classes, deq, width=8, into=None):
        super().__init__()
        self.enc = nn.Linear(into or int(torch.tensor(input_shape).prod()), width)
        self.deq = DEQ(Cell(width), deq)
        self.head = nn.Linear(width, classes)

    def injection(self, x):
        return self.enc(x.flatten(1))

    def readout(self, z):
        return self.head(z)

class Cell(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, z, x):
        return torch.tanh(0.5 * self.lin(z) + x)

class Plain(Model):
    """No DEQ layer: one linear map, reporting its cost as a DEQInfo as the zoo's neural ODE does."""

    def __init__(self, input_shape, classes, deq):
        super().__init__()
        self.lin = nn.Linear(int(torch.tensor(input_shape).prod()), classes)


def make(input_shape, classes, deq, width=8):
    """A factory function instead of a class (width 5 on digits: 64*5+5 + 5*5+5 + 5*10+10 = 415 parameters)."""
    return Net(input_shape, classes, deq, width=width)


def blobs(n=60, wrong=False):
    import numpy as np
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 2 * n)
    x = (rng.normal(size=(2 * n, 4)) + 3 * y[:, None]).astype("float32")
    return {"x": x} if wrong else (x[:n], y[:n], x[n:], y[n:])
'''


def write_study(folder: Path, model: dict, data: dict = None, files: dict = None) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in (files or {}).items():
        (folder / name).write_text(text)
    raw = {**STUDY, "base": {"epochs": 1, "data": data or {"name": "digits", "subset": 64}, "model": model}}
    (folder / "study.yaml").write_text(yaml.safe_dump(raw))
    return folder / "study.yaml"


def refused(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("case", ["no module", "no attribute", "import raises", "misspelt option", "not a model",
                                  "misspelt data option", "wrong return", "shape error", "no DEQ layer",
                                  "factory option"])
def test_own_code_mistakes_are_one_line_with_exit_2(case, tmp_path, capsys):
    mod = f"own_{case.replace(' ', '_')}"  # a module name of its own per case: imports are cached per process
    files = {f"{mod}.py": CELL}
    model, data, want = {"name": f"{mod}:Net"}, None, None
    if case == "no module":
        model = {"name": "nowhere_at_all:Net"}
        want = (rf"base: model: Value error, model 'nowhere_at_all:Net': no module named 'nowhere_at_all' \(looked in "
                rf"the study's folder {re.escape(str(tmp_path / case))} and sys.path\)")
    elif case == "no attribute":
        model = {"name": f"{mod}:Nett"}
        want = rf"model '{mod}:Nett': module '{mod}' \({re.escape(str(tmp_path / case / mod))}.py\) has no attribute 'Nett'"
    elif case == "import raises":
        files = {f"{mod}.py": "import math\nvalue = math.sqrt(-1)\n"}
        want = (rf"model '{mod}:Net': importing '{mod}' raised ValueError: math domain error "
                rf"\({re.escape(str(tmp_path / case / mod))}.py, line 2\)")
    elif case == "misspelt option":
        model = {"name": f"{mod}:Net", "options": {"widht": 4}}
        want = rf"unknown option\(s\) \['widht'\] for model '{mod}:Net'; valid: width, into"
    elif case == "not a model":
        model = {"name": f"{mod}:Cell"}
        want = rf"model '{mod}:Cell': class Cell is not a deqlab.models.Model; subclass DEQModel .*"
    elif case == "misspelt data option":
        data = {"name": f"{mod}:blobs", "options": {"nn": 5}}
        want = rf"unknown option\(s\) \['nn'\] for data '{mod}:blobs'; valid: n, wrong"
    elif case == "wrong return":
        data = {"name": f"{mod}:blobs", "options": {"wrong": True}}
        want = (rf"error: data '{mod}:blobs': returned a dict; a data function returns \(x_train, y_train, x_test, "
                r"y_test\) arrays or \(train, test\) torch.utils.data.Dataset objects")
    elif case == "shape error":
        model = {"name": f"{mod}:Net", "options": {"into": 5}}
        want = (rf"error: model '{mod}:Net' on 2 samples of data 'digits' \(shape \(1, 8, 8\)\): RuntimeError: mat1 "
                rf"and mat2 shapes cannot be multiplied \(2x64 and 5x8\) \({re.escape(str(tmp_path / case / mod))}.py, "
                r"line 15\)")
    elif case == "no DEQ layer":
        model = {"name": f"{mod}:Plain"}
        want = rf"deq.solver: set, but model '{mod}:Plain' has no DEQ layer, so it would be ignored"
    elif case == "factory option":
        model = {"name": f"{mod}:make", "options": {"depth": 2}}
        want = rf"unknown option\(s\) \['depth'\] for model '{mod}:make'; valid: width"
    path = write_study(tmp_path / case, model, data, files)
    if case == "no DEQ layer":
        raw = yaml.safe_load(path.read_text())
        raw["base"]["deq"] = {"solver": "broyden"}
        path.write_text(yaml.safe_dump(raw))
    line = refused(capsys, "validate", str(path))
    assert re.search(want, line), line
    assert line.startswith(f"error: {path}: ") or want.startswith("error:")
    # `deqlab run` refuses the same way before Ray starts and before anything is written
    assert refused(capsys, "run", str(path), "--storage", str(tmp_path / "res")) == line
    assert not (tmp_path / "res" / "mine").exists()
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_factory_function_builds_the_model(tmp_path, capsys):
    path = write_study(tmp_path, {"name": "own_factory:make", "options": {"width": 5}}, files={"own_factory.py": CELL})
    assert main(["validate", str(path)]) == 0
    assert "tried: own_factory:make on digits: inputs (1, 8, 8), 10 classes, 415 parameters" in capsys.readouterr().out


def test_debug_shows_the_users_traceback(tmp_path):
    import traceback

    path = write_study(tmp_path, {"name": "own_debug:Net", "options": {"into": 5}}, files={"own_debug.py": CELL})
    with pytest.raises(plugins.UserCodeError) as caught:
        main(["--debug", "validate", str(path)])
    shown = "".join(traceback.format_exception(caught.value))
    assert f'File "{tmp_path / "own_debug.py"}", line 15, in injection' in shown  # the user's frame, via the cause


# --------------------------------------------------------------------------- npz files and Datasets

def test_npz_data_trains_with_its_hash_and_path_recorded(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.images[:, None] / 16).astype(np.float32), digits.target
    np.savez(tmp_path / "digits.npz", x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    cfg = {"seed": 0, "epochs": 1, "data": {"name": "npz", "path": "digits.npz", "batch_size": 32},
           "model": {"name": "mlp", "options": {"width": 16, "inner": None}}, "optim": {"lr": 1e-2}}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["validate", str(tmp_path / "own.yaml")]) == 0
    assert "tried: mlp on npz: inputs (1, 8, 8), 10 classes" in capsys.readouterr().out
    assert main(["train", str(tmp_path / "own.yaml"), "--storage", str(tmp_path / "res"), "--quiet"]) == 0
    rows = load(tmp_path / "res" / "own").trials
    assert rows.test_acc.iloc[-1] > 0.5  # 10 classes
    assert rows["param.data.path"].iloc[-1] == str(tmp_path / "digits.npz")  # relative to the config's folder
    assert rows.data_source_hash.iloc[-1] == hashlib.sha256((tmp_path / "digits.npz").read_bytes()).hexdigest()[:16]
    assert rows.model_source_hash.isna().all()  # a built-in model has no source of yours

    np.savez(tmp_path / "bad.npz", x_train=x, y_train=y)
    cfg["data"]["path"] = "bad.npz"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    assert refused(capsys, "validate", str(tmp_path / "bad.yaml")) == (
        f"error: data.path {tmp_path / 'bad.npz'}: missing array(s) x_test, y_test; an .npz for name npz holds "
        "x_train, y_train, x_test, y_test (found x_train, y_train)")


DATASETS_FN = '''
import numpy as np
import torch
from torch.utils.data import TensorDataset

def arrays(n=50):
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 3.0, size=(2 * n, 2, 3, 3)).astype("float32")
    y = rng.integers(0, 4, 2 * n)
    y[0] = 4  # five classes
    return x[:n], y[:n], x[n:], y[n:]

def datasets(n=50):
    x, y, xt, yt = arrays(n)
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), TensorDataset(torch.from_numpy(xt), torch.from_numpy(yt))
'''


def test_a_data_function_may_return_arrays_or_datasets_alike(tmp_path):
    from deqlab.data import load_dataset

    (tmp_path / "own_sets.py").write_text(DATASETS_FN)
    plugins.add_folder(tmp_path)
    a = load_dataset("own_sets:arrays", options={"n": 50}, subset=20, seed=3)
    d = load_dataset("own_sets:datasets", options={"n": 50}, subset=20, seed=3)
    assert a.input_shape == d.input_shape == (2, 3, 3) and a.num_classes == d.num_classes == 5
    assert len(a.train) == len(d.train) == 20 and len(a.test) == len(d.test) == 50
    xa = torch.stack([a.train[i][0] for i in range(20)])
    xd = torch.stack([d.train[i][0] for i in range(20)])
    torch.testing.assert_close(xa, xd, rtol=1e-5, atol=1e-5)  # same subset, same per-channel standardisation
    full = load_dataset("own_sets:arrays", options={"n": 50}).train.tensors[0]
    torch.testing.assert_close(full.mean(dim=(0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(full.std(dim=(0, 2, 3), correction=0), torch.ones(2), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- entry points

def test_installed_plugins_are_listed_and_usable_by_name(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "tinyplug-0.1.dist-info").mkdir(parents=True)
    (site / "tinyplug-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (site / "tinyplug-0.1.dist-info" / "entry_points.txt").write_text(
        "[deqlab.models]\ntinynet = tinyplug:Net\n\n[deqlab.datasets]\ntinyblobs = tinyplug:blobs\n")
    (site / "tinyplug.py").write_text(CELL)
    monkeypatch.syspath_prepend(str(site))
    path = write_study(tmp_path / "s", {"name": "tinynet", "options": {"width": 4}}, {"name": "tinyblobs"})
    assert main(["models"]) == 0 and main(["data", "list"]) == 0
    assert "tinyplug" not in sys.modules  # listed from the package's metadata, not imported
    out = capsys.readouterr().out
    assert re.search(r"^tinynet +plugin tinyplug:Net", out, re.M)
    assert re.search(r"^tinyblobs +plugin tinyplug:blobs", out, re.M)
    assert main(["validate", str(path)]) == 0
    assert "tried: tinynet on tinyblobs: inputs (4,), 3 classes" in capsys.readouterr().out
    assert refused(capsys, "validate", str(write_study(tmp_path / "t", {"name": "tinynett"}))).endswith(
        "unknown model 'tinynett'; valid: mlp, conv, multiscale, neural_ode, an installed plugin (tinynet) or your "
        "own 'package.module:Class'")
