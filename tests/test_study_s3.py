"""Shared storage on a two-node cluster: a local --storage that one node does not share is refused; on a
real S3 endpoint a study writes to s3://, is interrupted, resumed from there, and every reader (ls, export,
the dashboard's loaders with the Depth view) reads it back. One cluster serves both (its start is the cost).

`moto_server` is an S3 API over HTTP on 127.0.0.1; every process (driver, both Ray nodes, their trials)
reaches it through the standard AWS environment variables, as a cluster's nodes reach S3.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml
from ray_cluster import free_port, two_node_cluster
from study_factory import TINY

import deqlab
from deqlab.report import views as dd
from deqlab.results import StudyStore, checkpoints, load, load_states
from deqlab.study import parse_study
from deqlab.study.summary import final_rows, list_studies

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
BUCKET = "deqlab-test"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server with one bucket; yields the environment that points AWS clients at it (also set in
    this process for the module's tests)."""
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": url, "AWS_EC2_METADATA_DISABLED": "true"}
    before = {k: os.environ.get(k) for k in env}
    try:
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline and server.poll() is None, "moto_server did not start"
                time.sleep(0.2)
        os.environ.update(env)
        pafs.S3FileSystem(endpoint_override=url, allow_bucket_creation=True).create_dir(BUCKET)
        yield env
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def cluster(s3, tmp_path_factory):
    """Two nodes that reach the S3 endpoint; where the OS allows it the second node also gets a disk of its
    own: an empty tmpfs over `node_local` in its own mount namespace, as on a cluster without shared disks."""
    env = {**os.environ, **s3, "RAY_AUTH_MODE": "disabled"}
    local = tmp_path_factory.mktemp("node-local")
    own_disk = ()
    if private_mount_works(local):
        own_disk = ("unshare", "-m", "--propagation", "private", "sh", "-c",
                    f"mount -t tmpfs tmpfs '{local}' && exec \"$0\" \"$@\"")
    with two_node_cluster(env, worker_prefix=own_disk) as address:
        yield {"address": address, "env": env, "node_local": local if own_disk else None}


def private_mount_works(folder) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs tmpfs '{folder}'"], capture_output=True)
    return probe.returncode == 0


def test_local_storage_not_shared_by_every_node_is_refused(cluster, tmp_path):
    local = cluster["node_local"]
    if local is None:
        pytest.skip("needs `unshare -m` (root or CAP_SYS_ADMIN) to give one node a disk of its own")
    raw = {"name": "scattered", "base": {**TINY, "epochs": 1}, "space": {"seed": {"grid": [0, 1]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run(_deqlab("run", str(tmp_path / "s.yaml"), "--storage", str(local / "res"), "--address",
                                 cluster["address"]), env=cluster["env"], capture_output=True, text=True, timeout=200)
    assert out.returncode == 2, out.stdout + out.stderr
    error = out.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"error: --storage {re.escape(str(local / 'res'))} is a local folder that 1 node\(s\) of "
                        r"the cluster do not share \([\d.]+ \(node [0-9a-f]{8}\)\): .*", error), error
    assert "s3://" in error
    assert not (local / "res" / "scattered").exists()  # refused before anything was written
    assert not list((local / "res").glob(".deqlab-shared-probe-*"))


def test_local_storage_every_node_shares_takes_trials_from_both_nodes(cluster, tmp_path):
    # tmp_path is one folder for both nodes (only node_local is private): the NFS-like shared-disk layout
    raw = {"name": "cluster", "base": {**TINY, "epochs": 1}, "space": {"seed": {"grid": [0, 1, 2, 3]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(raw))
    storage = tmp_path / "shared"
    out = subprocess.run(_deqlab("run", str(tmp_path / "cluster.yaml"), "--storage", str(storage), "--address",
                                 cluster["address"]), env=cluster["env"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = load(storage / "cluster").trials
    assert len(rows) == 4 and (rows.status == "completed").all()
    assert sorted(rows["param.seed"]) == [0, 1, 2, 3]
    assert rows.node_id.nunique() == 2  # both nodes trained, and both wrote to the shared folder
    assert not list(storage.glob(".deqlab-shared-probe-*"))  # the shared-storage probe cleaned up


def test_dashboard_directory_list_keeps_uris_whole():
    joined = os.pathsep.join(["/data/a", "s3://bucket/deqlab", "gs://b/x", "rel/b"])
    assert dd.split_dirs(joined) == ["/data/a", "s3://bucket/deqlab", "gs://b/x", "rel/b"]


def _mid_trial(fs, folder: str) -> bool:
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.base_name.endswith(".parquet"):
            t = pq.read_table(info.path, filesystem=fs).to_pandas()
            if len(t) and t.status.iloc[-1] == "running":
                return True
    return False


def _deqlab(*args):
    return [sys.executable, "-m", "deqlab", *args]


def test_two_node_study_on_s3_interrupted_resumed_and_read_back(cluster, tmp_path):
    env = cluster["env"]
    root = f"s3://{BUCKET}/deqlab"
    raw = {"name": "ons3", "base": {**TINY, "epochs": 3, "depth_states": 2}, "space": {"seed": {"grid": [0, 1, 2, 3]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (tmp_path / "ons3.yaml").write_text(yaml.safe_dump(raw))
    fs, base = pafs.FileSystem.from_uri(f"{root}/ons3")
    address = cluster["address"]
    run = subprocess.Popen(_deqlab("run", "ons3.yaml", "--storage", root, "--address", address), cwd=tmp_path,
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not _mid_trial(fs, f"{base}/trials"):
        assert run.poll() is None and time.time() < deadline, run.stdout.read() if run.poll() else "timeout"
        time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 130, out
    assert f"deqlab resume ons3 --storage {root}" in out
    resumed = subprocess.run(_deqlab("resume", "ons3", "--storage", root, "--address", address), cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    rows = load(f"{root}/ons3", traces=False).trials
    final = final_rows(rows)
    assert len(final) == 4 and (final.status == "completed").all(), final[["trial_id", "status"]]
    assert rows.node_id.nunique() == 2  # both nodes wrote to the bucket
    assert (rows.groupby("trial_id").epoch.apply(sorted).map(tuple) == (0, 1, 2)).all()
    names = [i.base_name for i in fs.get_file_info(pafs.FileSelector(base, recursive=True))]
    assert not [n for n in names if n.endswith(".tmp")]  # one PUT per object: no temp objects left

    assert re.match(r"ons3: 4 trials \(4 completed, checkpoints [\d.]+ kB\) best test_acc ", list_studies(root))
    # every trial's checkpoints are in the bucket, its newest the final epoch, and the model loads from there
    store = StudyStore(f"{root}/ons3")
    newest = {t: ref.epoch for t, ref in checkpoints.latest_by_trial(store).items()}
    assert newest == {t: 2 for t in final.trial_id}
    best = final.set_index("trial_id").test_acc.idxmax()
    model, config = deqlab.load_model(f"{root}/ons3", best="test_acc")
    assert config.seed == final.set_index("trial_id").loc[best, "param.seed"] and not model.training
    exported = subprocess.run(_deqlab("export", root, "--by", "seed", "--format", "csv"), env=env,
                              capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.strip().splitlines()) == 1 + 4  # header + one row per seed

    dirs = dd.study_dirs([root])  # a root in the bucket expands to its studies, as a local one does
    assert dirs == [f"{root}/ons3"]
    with_states = dd.trials_with_states(dirs[0])  # the Depth view's listing
    assert with_states == set(final.trial_id)
    states = load_states(dirs[0], sorted(with_states)[0])
    assert sorted(states.epoch.unique()) == [2] and sorted(states.step.unique()) == [0, 1, 2]  # latest epoch, k=0..2
    _depth_view_shows_states(root)


def _depth_view_shows_states(root: str) -> None:
    """The dashboard itself on the bucket: every page renders, and the Depth view finds the states."""
    from streamlit.testing.v1 import AppTest

    os.environ["DEQLAB_DASHBOARD_DIRS"] = root
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"),
                               default_timeout=60)
        at.run()
        at.sidebar.radio(key="page").set_value("Depth view").run()
        assert not at.exception, [e.value for e in at.exception]
        assert not [i.value for i in at.info]  # not "No trial recorded depth states"
        assert at.get("plotly_chart")  # the projected states
    finally:
        del os.environ["DEQLAB_DASHBOARD_DIRS"]


def test_optuna_study_follows_a_resume_to_another_machine(s3, tmp_path, monkeypatch):
    """A remote study's Optuna SQLite lives in a local cache: a machine without one starts from storage's copy."""
    import tempfile

    from deqlab.study.tuner import _optuna_path

    spec = parse_study({"name": "tpe-s3", "base": TINY, "space": {"seed": {"int": [0, 9]}},
                        "objectives": [{"metric": "test_acc", "mode": "max"}]}, "tpe-s3")
    root = f"s3://{BUCKET}/deqlab"
    fs, base = pafs.FileSystem.from_uri(f"{root}/tpe-s3/optuna.db")
    with fs.open_output_stream(base) as out:
        out.write(b"sqlite bytes of the first machine")
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))  # this machine: an empty cache
    local = _optuna_path(spec, root)
    assert local.startswith(str(tmp_path)) and Path(local).read_bytes() == b"sqlite bytes of the first machine"
    Path(local).write_bytes(b"newer local state")
    assert Path(_optuna_path(spec, root)).read_bytes() == b"newer local state"  # a cache present is kept


def test_own_model_and_data_reach_both_nodes_from_the_drivers_folder_only(cluster, tmp_path):
    """Your own modules exist only beside the study on the driver's side: Ray's runtime_env ships them, and
    each node's trials import, train and record them (issue 27)."""
    example = Path(__file__).resolve().parent.parent / "examples" / "own_model"
    lab, elsewhere = tmp_path / "lab", tmp_path / "elsewhere"
    lab.mkdir(), elsewhere.mkdir()
    for name in ("gated.py", "spirals.py"):
        shutil.copy(example / name, lab / name)
    raw = {"name": "own-cluster", "space": {"deq.solver": {"grid": ["anderson", "broyden"]}},
           "base": {"epochs": 1, "data": {"name": "spirals:spirals", "options": {"n_train": 300, "n_test": 100}},
                    "model": {"name": "gated:GatedDEQ", "options": {"width": 16}}, "optim": {"lr": 1e-2}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (lab / "own.yaml").write_text(yaml.safe_dump(raw))
    assert "lab" not in cluster["env"].get("PYTHONPATH", "")
    out = subprocess.run(_deqlab("run", str(lab / "own.yaml"), "--storage", str(tmp_path / "shared"), "--address",
                                 cluster["address"]), cwd=elsewhere, env=cluster["env"], capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = load(tmp_path / "shared" / "own-cluster").trials
    assert len(rows) == 2 and (rows.status == "completed").all(), rows[["trial_id", "status", "error"]]
    assert rows.node_id.nunique() == 2  # each node imported gated.py and spirals.py from what Ray shipped
    assert (rows.test_acc > 0.4).all() and (rows.nfe_fwd > 1).all()  # 3 arms: chance is 1/3
    assert set(rows["param.model.name"]) == {"gated:GatedDEQ"} and rows.model_source_hash.nunique() == 1
