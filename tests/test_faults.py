"""Faults and bad input: nothing a user or a machine does wrong may lose a study or corrupt it silently.

Counts reported in the README's Reliability section come from these tests.
"""

import ast
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from deqlab.cli import main
from deqlab.results import load

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- torn files


WRITER = textwrap.dedent("""
    import sys
    from deqlab.results import TrialWriter
    root, study = sys.argv[1], sys.argv[2]
    epoch = 0
    while True:  # rewrite the trial's file after every "epoch", as a study does, as fast as possible
        w = TrialWriter(root, study, "t0", {"deq.init": "skip"}, {"seed": 0})
        for e in range(epoch + 1):
            w.add_epoch(e, {"test_acc": e / 100, "nfe_fwd": float(e)})
        w.flush()
        print(epoch, flush=True)
        epoch += 1
""")


def test_sigkill_during_writes_never_leaves_a_torn_file(tmp_path):
    """SIGKILL a process that does nothing but rewrite a trial's Parquet file, 20 times at random moments."""
    rng = random.Random(0)
    kills = 0
    last_seen = -1
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), "s"], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # at least one full write, then kill at a random moment of the next ones
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        with _no_warning():
            res = load(tmp_path / "s")
        assert res.skipped == []
        rows = res.trials
        epochs = sorted(rows.epoch)
        assert epochs == list(range(len(epochs)))  # a whole file: epochs 0..k, nothing half-written
        assert (rows.test_acc == rows.epoch / 100).all()
        last_seen = len(epochs)
    assert kills == 20 and last_seen >= 1
    # killed mid-write leaves at most hidden temp files of the trial's own writes; what readers can see is
    # exactly the trial's file, and it is whole (every column checked, as load does)
    folder = tmp_path / "s" / "trials"
    visible = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
    assert visible == ["t0.parquet"]
    table = pq.read_table(folder / "t0.parquet")
    table.validate(full=True)
    assert sorted(table.column("epoch").to_pylist()) == list(range(table.num_rows)) and table.num_rows >= 1
    hidden = [p.name for p in folder.iterdir() if p.name.startswith(".")]
    assert all(re.fullmatch(r"\.t0\.parquet\.[0-9a-f]{32}\.tmp", name) for name in hidden), hidden
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["trials"]  # nothing written anywhere else


class _no_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error")  # a skipped (unreadable) file would warn: make it fail

    def __exit__(self, *exc):
        self._cm.__exit__(*exc)
        return False


# --------------------------------------------------------------------------- concurrent writers and a reader


def test_two_studies_writing_one_root_while_a_reader_reads(tmp_path):
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name], stdout=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    try:
        for w in writers:
            w.stdout.readline()
        reads = 0
        deadline = time.time() + 5
        seen = {"a": 0, "b": 0}
        while time.time() < deadline:
            with _no_warning():
                res = load([tmp_path / "a", tmp_path / "b"])
            assert res.skipped == []
            for study, rows in res.trials.groupby("study"):
                assert sorted(rows.epoch) == list(range(len(rows)))  # never a partial file
                assert len(rows) >= seen[study]  # never goes backwards
                seen[study] = len(rows)
            reads += 1
        assert reads > 10 and min(seen.values()) > 1
    finally:
        for w in writers:
            w.kill()
            w.wait()
    assert set(load(tmp_path / "a").trials.study) == {"a"} and set(load(tmp_path / "b").trials.study) == {"b"}


# --------------------------------------------------------------------------- bad input, one clear line each


def _cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err.strip()


BAD_STUDIES = {
    "malformed": "name: [unclosed\n",
    "not a mapping": "- just\n- a list\n",
    "unknown key": "name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {seed: {grid: [0]}}\nsearch: {algo: tpe}\n",
    "wrong type": "name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {seed: {grid: [0]}}\nsearch: {num_samples: many}\n",
    "empty space": "name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {}\n",
    "bad range": "name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {deq.tol: {uniform: [1, 0]}}\n",
    "unknown solver": "name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {deq.solver: {choice: [newton]}}\n",
    "missing data": ("name: x\nobjectives: [{metric: test_acc, mode: max}]\nspace: {seed: {grid: [0]}}\n"
                     "base: {data: {name: fashion_mnist, data_dir: DATA}}\n"),
    "escaping name": "name: ../../etc\nobjectives: [{metric: test_acc, mode: max}]\nspace: {seed: {grid: [0]}}\n",
}


@pytest.mark.parametrize("kind", sorted(BAD_STUDIES))
def test_bad_study_files_fail_with_one_line_before_ray(kind, tmp_path, capsys):
    file = tmp_path / "study.yaml"
    file.write_text(BAD_STUDIES[kind].replace("DATA", str(tmp_path / "nodata")))
    code, err = _cli(["run", str(file), "--storage", str(tmp_path / "res")], capsys)
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    if kind == "missing data":
        assert "deqlab data get fashion_mnist" in err
    else:
        assert str(file) in err


def test_corrupt_data_set_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"\x00\x00\x08\x03garbage")
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({"name": "x", "objectives": [{"metric": "test_acc", "mode": "max"}],
                                    "space": {"seed": {"grid": [0]}},
                                    "base": {"data": {"name": "mnist", "data_dir": str(tmp_path / "data")}}}))
    code, err = _cli(["run", str(file), "--storage", str(tmp_path / "res")], capsys)
    assert code == 2 and err.startswith("error: ") and "mnist" in err


def test_results_paths_that_are_not_results(tmp_path, capsys):
    afile = tmp_path / "file.txt"
    afile.write_text("hello")
    code, err = _cli(["ls", str(afile)], capsys)
    assert code == 2 and "is not a directory of studies" in err
    code, err = _cli(["resume", "nostudy", "--storage", str(tmp_path)], capsys)
    assert code == 2 and "no study 'nostudy'" in err
    code, err = _cli(["resume", "../up", "--storage", str(tmp_path)], capsys)
    assert code == 2 and "invalid study name" in err


def test_unwritable_storage_is_refused_at_start(tmp_path, capsys):
    blocker = tmp_path / "plainfile"
    blocker.write_text("not a directory")
    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({"name": "x", "objectives": [{"metric": "test_acc", "mode": "max"}],
                                    "space": {"seed": {"grid": [0]}}}))
    code, err = _cli(["run", str(file), "--storage", str(blocker / "results")], capsys)
    assert code == 2 and "cannot write results under" in err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_full_disk_is_refused_at_start(tmp_path, capsys):
    """A tiny tmpfs (needs mount rights: root in CI) stands in for a full disk."""
    from system_tools import tmpfs

    with tmpfs(tmp_path / "tiny", "256k") as mnt:
        (mnt / "filler").write_bytes(b"\0" * (200 * 1024))
        file = tmp_path / "study.yaml"
        file.write_text(yaml.safe_dump({"name": "x", "objectives": [{"metric": "test_acc", "mode": "max"}],
                                        "space": {"seed": {"grid": [0]}}}))
        code, err = _cli(["run", str(file), "--storage", str(mnt)], capsys)
        assert code == 2 and "cannot write results under" in err and "No space left" in err


# --------------------------------------------------------------------------- safety by inspection


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
            yield owner, name, node


def test_no_unsafe_deserialisation_or_eval_in_the_code():
    """No eval/exec, no yaml.load but with the safe loader (`_SAFE_LOADER`: libyaml's CSafeLoader or
    SafeLoader, checked below), no pickle.load(s), no torch.load without weights_only=True."""
    sources = [p for d in ("deqlab", "dashboard") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 10
    problems = []
    for path in sources:
        tree = ast.parse(path.read_text())
        for owner, name, node in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if isinstance(node.func, ast.Name) and name in ("eval", "exec"):  # not model.eval()
                problems.append(f"{where} {name}()")
            if owner == "yaml" and name in ("load", "load_all", "unsafe_load", "full_load"):
                loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
                if not (name == "load" and isinstance(loader, ast.Name) and loader.id == "_SAFE_LOADER"):
                    problems.append(f"{where} yaml.{name}")
            if owner in ("pickle", "cloudpickle", "dill") and name in ("load", "loads"):
                problems.append(f"{where} {owner}.{name}")
            if owner == "torch" and name == "load":
                ok = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                if not ok:
                    problems.append(f"{where} torch.load without weights_only=True")
    assert problems == []
    from deqlab.results import safe_yaml
    assert safe_yaml._SAFE_LOADER in (getattr(yaml, "CSafeLoader", None), yaml.SafeLoader)


# --------------------------------------------------------------------------- processes dying under a study


TINY = {"seed": 0, "epochs": 3, "data": {"name": "digits", "subset": 300, "test_subset": 150},
        "model": {"name": "mlp", "options": {"width": 16, "inner": 32}}, "deq": {"tol": 1e-3, "max_iter": 20}}


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether process `pid` is `ancestor` or one of its descendants (walks /proc's parent links)."""
    while pid > 1:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
    return False


def _kill_first_train_worker_after_first_epoch(trials_dir: Path, driver: int, killed: list, stop, timeout=240):
    """Wait until a trial has written an epoch, then SIGKILL one Ray Train worker process of this study.

    Only processes under the study's driver are candidates (another Ray on the machine is left alone).
    The pid killed is appended to `killed`, so the test can check that a kill happened at all.
    """
    deadline = time.time() + timeout
    while time.time() < deadline and not stop.is_set():
        if trials_dir.exists() and any(trials_dir.glob("*.parquet")):
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    cmdline = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                # Ray's process title for a Train worker actor
                if b"RayTrainWorker" in cmdline and _descends_from(int(proc.name), driver):
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                    return
        time.sleep(0.2)


@pytest.mark.ray
@pytest.mark.timeout(600)
@pytest.mark.parametrize("max_failures, expected", [(0, "failed"), (1, "completed")])
def test_train_worker_killed_mid_trial(max_failures, expected, tmp_path):
    """A killed worker fails its trial (recorded with the error) or is retried; the study goes on."""
    import threading

    file = tmp_path / "study.yaml"
    file.write_text(yaml.safe_dump({
        # a second trial proves the study goes on after a failed one; after a retried one it adds nothing
        "name": "wk", "base": TINY, "space": {"seed": {"grid": [0, 1] if max_failures == 0 else [0]}},
        "objectives": [{"metric": "test_acc", "mode": "max"}],
        "search": {"algorithm": "grid", "max_concurrent_trials": 1},
        "trainer": {"num_workers": 2, "cpus_per_worker": 0.9, "max_failures": max_failures}}))
    storage = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "deqlab", "run", str(file), "--storage", str(storage),
                             "--num-cpus", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=_kill_first_train_worker_after_first_epoch,
                              args=(storage / "wk" / "trials", proc.pid, killed, stop))
    killer.start()
    try:
        stdout, stderr = proc.communicate(timeout=500)
    finally:
        stop.set()
        killer.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = stdout + stderr
    assert len(killed) == 1, "no Ray Train worker of the study was killed\n" + log
    final = load(storage / "wk").trials.sort_values("epoch").groupby("trial_id").tail(1).set_index("param.seed")
    assert len(final) == (2 if max_failures == 0 else 1), log
    assert final.loc[0, "status"] == expected, log
    if expected == "failed":
        assert final.loc[1, "status"] == "completed"  # the study went on
        assert isinstance(final.loc[0, "error"], str) and final.loc[0, "error"]
        assert proc.returncode == 0 and "failed" in stdout
    else:
        rows = load(storage / "wk").trials
        assert sorted(rows[rows["param.seed"] == 0].epoch) == [0, 1, 2]  # the retry rewrote its rows, once each
        # rank 0 checkpointed through Ray Train into the study's train/ folder; the final one is the last epoch
        from deqlab.results import StudyStore, checkpoints

        saved = checkpoints.find(StudyStore(str(storage / "wk")))
        assert saved and saved[-1].epoch == 2 and "/train/train-" in saved[-1].path


# --------------------------------------------------------------------------- the dashboard over a real diverged run


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_dashboard_shows_a_diverged_trial_and_never_writes(tmp_path, monkeypatch):
    """A real training run that diverges (absurd learning rate) next to a healthy one; the app reads both."""
    import sys as _sys

    from deqlab.results import TrialWriter
    from deqlab.run import TrainConfig, train

    _sys.path.insert(0, str(ROOT / "tests"))
    from test_dashboard import PAGES, _app

    for name, lr in (("healthy", 3e-3), ("blowup", 1e6)):
        cfg = TrainConfig(**{**TINY, "optim": {"lr": lr}, "max_unconverged_frac": 0.5})
        writer = TrialWriter(str(tmp_path), "nf", name, cfg.flat_params(), {"seed": 0})
        result = train(cfg, writer=writer)
        assert result.status == ("completed" if name == "healthy" else "diverged")
    before = _tree(tmp_path)
    at = _app(monkeypatch, tmp_path / "nf")
    at.run()
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, page
    at.sidebar.radio(key="page").set_value("Overview").run()
    shown = " ".join(str(getattr(e, "value", "")) for e in at.main) + " ".join(str(df.value) for df in at.dataframe)
    assert "diverged" in shown
    assert _tree(tmp_path) == before  # read-only: no file added, changed or touched
