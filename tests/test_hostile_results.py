"""Odd or hostile results files never crash a reader: each is skipped with a warning naming it, the rest load.

A list-valued hyperparameter, missing key columns, a text metric, and a file damaged in place after a
compaction with its size and mtime put back; `deqlab export` and every dashboard page over them.
"""

import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deqlab.cli import build_parser, dashboard_command, main
from deqlab.results import compact, finalize_trial, load, load_spec
from study_factory import comparison_study, metrics, params, write_trial
from system_tools import stop
from test_dashboard import PAGES, _app, _visit_all

sys.path.insert(0, str(Path(__file__).parent))

GOOD = {"study": ["cmp"], "trial_id": ["odd"], "epoch": [0], "status": ["completed"], "test_acc": [0.5],
        "nfe_fwd": [3.0], "epoch_time_s": [1.0], "param.deq.init": ["zeros"], "param.deq.solver": ["anderson"]}
HOSTILE = {
    "list-param": {**GOOD, "param.deq.solver_options.m": [[1, 2]]},
    "no-keys": {k: v for k, v in GOOD.items() if k not in ("study", "trial_id")},
    "text-metric": {**GOOD, "test_acc": ["high"]},
}


def hostile_study(root, kind) -> Path:
    path = comparison_study(root)
    pq.write_table(pa.table(HOSTILE[kind]), path / "trials" / f"{kind}.parquet")
    return path


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_load_skips_the_file_with_a_warning_naming_it(kind, tmp_path):
    path = hostile_study(tmp_path, kind)
    with pytest.warns(UserWarning, match=f"{kind}.parquet"):
        res = load(path)
    assert len(res.skipped) == 1 and f"{kind}.parquet" in res.skipped[0]
    assert res.trials.trial_id.nunique() == 10  # the comparison study's own trials, all of them


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_export_skips_it_and_prints_the_table(kind, tmp_path, capsys):
    path = hostile_study(tmp_path, kind)
    assert main(["export", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"warning: skipped unreadable results file {path}/trials/{kind}.parquet" in err
    assert "DEQ" in out and "Anderson" in out and "Traceback" not in err


def test_a_file_damaged_in_place_after_compaction_is_not_served_from_the_snapshot(tmp_path):
    path = comparison_study(tmp_path)
    compact(path)
    victim = path / "trials" / "skip-anderson-0.parquet"
    stat = victim.stat()
    data = bytearray(victim.read_bytes())
    data[8:40] = b"\xff" * 32  # same size, garbage where the first column's pages are
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # size and mtime as before
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.warns(UserWarning, match="skip-anderson-0.parquet"):
        res = load(path)
    assert [s for s in res.skipped if "skip-anderson-0.parquet" in s]
    assert "skip-anderson-0" not in set(res.trials.trial_id) and res.trials.trial_id.nunique() == 9
    with warnings.catch_warnings():  # an untouched study still loads from its snapshot, silently
        warnings.simplefilter("error")
        other = comparison_study(tmp_path / "other")
        compact(other)
        assert load(other).skipped == []


def test_every_dashboard_page_renders_over_hostile_files(tmp_path, monkeypatch):
    for kind in HOSTILE:
        pq.write_table(pa.table(HOSTILE[kind]), comparison_study(tmp_path) / "trials" / f"{kind}.parquet")
    at = _app(monkeypatch, tmp_path / "cmp")
    at.run()
    for page in PAGES:
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, page


def test_dashboard_hides_server_error_details_from_the_browser(tmp_path):
    path = comparison_study(tmp_path)
    argv, _ = dashboard_command(build_parser().parse_args(["dashboard", str(path)]))
    assert "--client.showErrorDetails none" in " ".join(argv)


def test_dashboard_answers_only_to_its_own_names(tmp_path):
    import socket as sock

    path = comparison_study(tmp_path)

    def allowed(*extra):
        argv, _ = dashboard_command(build_parser().parse_args(["dashboard", str(path), *extra]))
        return [argv[i + 1] for i, a in enumerate(argv) if a == "--server.allowedHosts"]

    assert allowed() == ["localhost", "127.0.0.1", "::1"]
    assert allowed("--host", "10.1.2.3") == ["localhost", "127.0.0.1", "::1", "10.1.2.3"]
    assert allowed("--host", "0.0.0.0") == list(dict.fromkeys(["localhost", "127.0.0.1", "::1", sock.gethostname(),
                                                                sock.getfqdn()]))  # the machine's own names


# --------------------------------------------------------------------------- a results root from anywhere


def two_studies(tmp_path) -> Path:
    """A results root with a good study (`cmp`) and another (`evil`) whose files the test makes hostile."""
    root = tmp_path / "root"
    comparison_study(root)
    comparison_study(root, "evil")
    return root


def _one_line_each(err: str) -> list[str]:
    assert "Traceback" not in err and "RecursionError" not in err, err
    lines = err.splitlines()
    assert all(line.startswith("warning: ") for line in lines), err
    return lines


@pytest.mark.parametrize("kind", ["deep", "huge"])
def test_a_deep_or_huge_study_yaml_in_a_results_folder_is_one_warning(kind, tmp_path, capsys, monkeypatch):
    """A study.yaml in a results folder gets a study file's caps: 20,000 nested `[` made `deqlab export` print
    a 2,997-line RecursionError and blanked every dashboard page; 60 MB made `deqlab ls` take 46 s."""
    import time

    root = two_studies(tmp_path)
    spec = root / "evil" / "study.yaml"
    if kind == "deep":
        spec.write_text("[" * 20_000 + "]" * 20_000)
        said = "maximum nesting depth"  # libyaml's own cap (1000) speaks first here; 600 `[`: ours, 32
    else:
        with open(spec, "wb") as f:
            f.truncate(60 << 20)  # 60 MB (sparse: nothing to write), read by nobody now
        said = f"{60 << 20} bytes; a study file is at most 1048576"
    t0 = time.perf_counter()
    assert main(["ls", str(root)]) == 0
    out, err = capsys.readouterr()
    assert time.perf_counter() - t0 < 10  # the cap, not the file, sets the time
    assert out.splitlines() == ["cmp: 10 trials (1 running, 8 completed, 1 failed) best test_acc 0.95",
                                "evil: 10 trials (1 running, 8 completed, 1 failed)"]  # no objective to rank by
    assert main(["export", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = _one_line_each(err)
    spec_lines = [line for line in lines if "study.yaml" in line]
    assert len(spec_lines) == 1 and spec_lines[0].startswith(f"warning: unreadable study spec {spec}: "), lines
    assert said in spec_lines[0], spec_lines
    assert "| SkipDEQ | Anderson |" in out  # the table of both studies' trials
    if kind == "huge":
        return  # the pages read the spec through the same reader; once is enough
    at = _app(monkeypatch, root)
    seen = _visit_all(at)
    for page in PAGES:
        assert any("evil/study.yaml" in w and said.split(";")[0] in w for w in seen[page][0]), page
    assert set(at.sidebar.multiselect(key="filter:study").value) == {"cmp", "evil"}  # both studies shown


def _trial_table(**columns) -> pa.Table:
    return pa.table({**GOOD, **{k: [v] for k, v in columns.items()}})


@pytest.mark.parametrize("column, name", [("trial_id", "../../etc/passwd"), ("trial_id", "x\n"),
                                          ("study", "../cmp")])
def test_hostile_trial_and_study_names_are_refused_where_read(column, name, tmp_path, monkeypatch):
    """The name check raised only when a page used the name: it killed the Trial and Depth pages."""
    path = comparison_study(tmp_path)
    pq.write_table(_trial_table(**{column: name}), path / "trials" / "named.parquet")
    with pytest.warns(UserWarning, match="named.parquet"):
        res = load(path)
    assert len(res.skipped) == 1 and f"column {column} holds invalid names: {name!r}" in res.skipped[0]
    assert name not in set(res.trials[column]) and res.trials.trial_id.nunique() == 10
    at = _app(monkeypatch, path)
    at.run()
    for page in ("Trial detail", "Depth view"):  # the pages the name used to kill
        at.sidebar.radio(key="page").set_value(page).run()
        assert not at.exception, page
    at.sidebar.radio(key="page").set_value("Trial detail").run()
    assert len(at.selectbox(key="trial_pick").options) == 10  # the good trials, listed


def test_parquet_files_of_absurd_size_or_footer_are_skipped_before_allocation(tmp_path):
    """A footer claiming 150 MB of metadata made pyarrow allocate 150 MB (2 GB: 2 GB) before failing."""
    path = comparison_study(tmp_path)
    good = (path / "trials" / "skip-anderson-0.parquet").read_bytes()
    size = 200 << 20
    with open(path / "trials" / "footer.parquet", "wb") as f:  # sparse: costs no disk
        f.write(good[:4])
        f.truncate(size - 8)
        f.seek(size - 8)
        f.write((150 << 20).to_bytes(4, "little") + b"PAR1")
    with open(path / "trials" / "huge.parquet", "wb") as f:
        f.write(good[:4])
        f.truncate((1 << 30) + 1)
    code = ("import sys, warnings, pyarrow as pa\nfrom deqlab.results import load\n"
            "warnings.simplefilter('ignore')\nres = load(sys.argv[1])\n"
            "print(pa.default_memory_pool().max_memory(), res.trials.trial_id.nunique())\n"
            "print(*res.skipped, sep='\\n')")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parent.parent, env={**os.environ, "PYTHONPATH": str(Path(
                             __file__).resolve().parent.parent)})
    assert out.returncode == 0, out.stderr
    peak, trials = map(int, out.stdout.splitlines()[0].split())
    assert trials == 10 and peak < (16 << 20), peak  # the whole study read with well under 150 MB
    skipped = out.stdout.splitlines()[1:]
    assert any("footer.parquet" in s and f"its footer claims {150 << 20} bytes of metadata in a file of {size}" in s
               for s in skipped), skipped
    assert any("huge.parquet" in s and f"{(1 << 30) + 1} bytes; a results file is at most {1 << 30}" in s
               for s in skipped), skipped


def test_links_leading_out_of_the_study_folder_are_skipped(tmp_path):
    root = two_studies(tmp_path)
    study, other = root / "cmp", root / "evil"
    pq.write_table(_trial_table(study="evil", trial_id="foreign"), other / "trials" / "foreign.parquet")
    (study / "trials" / "foreign.parquet").symlink_to(other / "trials" / "foreign.parquet")
    (study / "trials" / "inside.parquet").symlink_to(study / "trials" / "skip-anderson-0.parquet")  # no escape
    with pytest.warns(UserWarning, match="foreign.parquet.*outside the study folder"):
        res = load(study)
    assert [s.split(":")[0] for s in res.skipped] == [str(study / "trials" / "foreign.parquet")]
    assert "foreign" not in set(res.trials.trial_id) and set(res.trials.study) == {"cmp"}
    assert len(res.trials[res.trials.trial_id == "skip-anderson-0"]) == 4  # the file and its in-study link
    (other / "study.yaml").unlink()
    (other / "study.yaml").symlink_to(study / "study.yaml")
    with pytest.raises(ValueError, match="study.yaml: a link to .*, outside the study folder"):
        load_spec(other)
    shutil.rmtree(other / "traces")
    (other / "traces").symlink_to(study / "traces")  # a whole folder borrowed
    with pytest.warns(UserWarning, match="outside the study folder"):
        res = load(other)
    assert res.traces.empty and len(res.skipped) == 10


# --------------------------------------------------------------------------- output that cannot be forged


FORGED = "\x1b]0;owned\x07\x1b[31mred\nfake: 99 trials (99 completed)"


def test_ls_and_export_escape_control_characters(tmp_path, capsys):
    path = comparison_study(tmp_path)
    write_trial(tmp_path, "cmp", "forged", params("zeros", "anderson", 3), [metrics(0.5, 3.0, 1.0)], "running")
    finalize_trial(str(tmp_path), "cmp", "forged", "failed", error=FORGED)
    write_trial(tmp_path, "cmp", "valued", params("zeros\x1b[2J|x", "anderson", 4), [metrics(0.5, 3.0, 1.0)],
                "completed")
    (path / "trials" / "\x1b[31mred.parquet").write_bytes(b"PAR1 not parquet")
    assert main(["ls", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out
    assert not any(line.startswith("fake:") for line in out.splitlines())  # no line forged
    assert "  forged failed: \\x1b]0;owned\\x07\\x1b[31mred\\nfake: 99 trials (99 completed)" in out.splitlines()
    assert "\\x1b[31mred.parquet" in err
    for fmt, cell in (("markdown", r"zeros\\x1b\[2J\|x"), ("csv", r"zeros\x1b[2J|x"), ("latex", "zeros")):
        assert main(["export", str(path), "--format", fmt]) == 0
        out, err = capsys.readouterr()
        assert "\x1b" not in out + err and cell in out, (fmt, out)


def test_progress_lines_escape_control_characters(capsys):
    from deqlab.cli.common import say

    say(f"[1/2 done, 0 running, 3 s] t1 failed: {FORGED}")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "\x1b" not in out and "\\nfake: 99 trials" in out


def test_dashboard_shows_a_trial_error_as_text_never_as_markdown(tmp_path, monkeypatch):
    """`st.error` renders Markdown: an image in a trial's error made the browser fetch its URL."""
    import html

    from markdown_it import MarkdownIt

    error = "ValueError: ![x](http://127.0.0.1:9/x.png) **bold** <img src=x> :red[red] $x^2$"
    write_trial(tmp_path, "cmp", "t0", params("zeros", "anderson", 0), [metrics(0.5, 3.0, 1.0)], "running")
    finalize_trial(str(tmp_path), "cmp", "t0", "failed", error=error)
    at = _app(monkeypatch, tmp_path / "cmp")
    at.run()
    at.sidebar.radio(key="page").set_value("Trial detail").run()
    assert not at.exception and len(at.error) == 1
    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(at.error[0].value)
    assert rendered.startswith("<p>") and "<" not in rendered[3:-5], rendered  # no image, emphasis or HTML
    assert html.unescape(rendered[3:-5]) == f"failed: {error}"  # the text itself


def test_dashboard_refuses_a_websocket_with_a_foreign_host(tmp_path):
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 opens the app's WebSocket
    with Host and Origin evil.example. Refused; the app's own name is served (the study's path in the data)."""
    from test_dashboard import _free_port, _wait_healthy
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect
    from streamlit.proto.BackMsg_pb2 import BackMsg

    path = comparison_study(tmp_path)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deqlab", "dashboard", str(path), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stream(host: str) -> bytes:
        sock = socket.create_connection(("127.0.0.1", port))
        with connect(f"ws://{host}:{port}/_stcore/stream", sock=sock, origin=f"http://{host}:{port}",
                     open_timeout=30) as ws:
            msg = BackMsg()
            msg.rerun_script.query_string = ""
            ws.send(msg.SerializeToString())
            got = b""
            while b"skip-anderson-0" not in got:
                got += ws.recv(timeout=30)
            return got

    try:
        _wait_healthy(port, proc)
        for host in ("evil.example", "127.0.0.2"):
            with pytest.raises(InvalidStatus) as refused:
                stream(host)
            assert refused.value.response.status_code == 403, host
        for host in ("127.0.0.1", "localhost"):
            assert b"skip-anderson-0" in stream(host)
    finally:
        stop(proc)


def test_links_in_checkpoint_folders_are_not_followed(tmp_path, capsys):
    """pyarrow's recursive listing follows links: `checkpoints/t/loop -> the study` made `deqlab ls` walk
    forever. Links are neither followed nor counted; the study's own checkpoint bytes are."""
    path = comparison_study(tmp_path)
    own = path / "checkpoints" / "t" / "checkpoint_000001"
    own.mkdir(parents=True)
    (own / "state.pt").write_bytes(b"x" * 2000)
    (path / "checkpoints" / "t" / "loop").symlink_to(path)
    (own / "elsewhere.pt").symlink_to("/usr/bin/env")
    assert main(["ls", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        "cmp: 10 trials (1 running, 8 completed, 1 failed, checkpoints 2 kB) best test_acc 0.95"


def test_a_checkpoint_meta_with_a_non_numeric_epoch_leaves_the_trial_page_without_a_checkpoint(tmp_path):
    """The dashboard reads a trial's checkpoints from their meta.json: a malformed one is no checkpoint, no crash."""
    import json

    from deqlab.report.views import trial_checkpoint
    from deqlab.results.checkpoints import FORMAT

    study = comparison_study(tmp_path)
    folder = study / "checkpoints" / "odd" / "checkpoint_000001"
    folder.mkdir(parents=True)
    meta = {"format": FORMAT, "trial_id": "odd", "epoch": 1}
    (folder / "meta.json").write_text(json.dumps(meta))
    assert trial_checkpoint(str(study), "odd") == (1, 1, f"deqlab evaluate {study} --trial odd")
    (folder / "meta.json").write_text(json.dumps({**meta, "epoch": "one"}))
    assert trial_checkpoint(str(study), "odd") is None
