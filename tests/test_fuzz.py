"""Fuzzing the places where untrusted input enters: the study validator, the results loader, a results
folder's study.yaml, and the text the terminal and the dashboard show of results.

The study validator may only raise `StudyError`, whose message names the file and the key, is one line
(unless the input itself holds a line break: the CLI joins the lines) and carries no traceback;
the loader may only skip a file with a warning naming it, and gives out only safe trial and study names;
printed text has no control character, and the dashboard's Markdown renders as the text itself.
"""

import copy
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deqlab.results import TrialWriter, load
from deqlab.study import StudyError, StudySpec, parse_study

VALID = {
    "name": "fz",
    "base": {"epochs": 2, "data": {"name": "digits"}, "model": {"name": "mlp", "options": {"width": 16}}},
    "space": {"deq.init": {"choice": ["zeros", "skip"]},
              "deq.solver": {"choice": {"anderson": {"deq.solver_options.m": {"int": [2, 5]}}, "broyden": {}}},
              "deq.tol": {"loguniform": [1e-5, 1e-2]}},
    "objectives": [{"metric": "test_acc", "mode": "max"}],
    "search": {"algorithm": "tpe", "num_samples": 4},
    "scheduler": {"name": "asha", "grace_period": 1},
    "trainer": {"num_workers": 0},
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["zeros", "anderson", "grid", "choice", "max", "deq.tol"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=10), scalars), inner, max_size=4)),
    max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


ALL_PATHS = [p for p in _paths(VALID) if p]


def _set(raw, path, value):
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


# what str.splitlines() splits on: a message has one line unless the input itself carried a line break
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
TOP_KEYS = tuple(StudySpec.model_fields)
WHOLE_DOCUMENT = ("expected a mapping at the top level", "this is a single-run training config")


def _strings(node):
    """Every string in a document, keys and values (non-string keys as pydantic names them: str())."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            yield from _strings(v)


def _check(raw):
    """parse_study either accepts `raw` or raises StudyError, whose message (StudyError's docstring) names the
    file and the key: `fuzz.yaml: <key path>: <what is wrong>`, or a whole-document problem after the file name;
    one line (the CLI prints it as `error: <message>`), no traceback, no chained exception behind it."""
    try:
        parse_study(raw, "fuzz.yaml")
    except StudyError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml: "), msg
        rest = msg[len("fuzz.yaml: "):]
        keys = TOP_KEYS + (tuple(str(k) for k in raw) if isinstance(raw, dict) else ())
        names_a_key = any(rest.startswith(f"{k}:") or rest.startswith(f"{k}.") for k in keys)
        assert names_a_key or rest.startswith(WHOLE_DOCUMENT), msg
        assert rest.split(": ", 1)[-1].strip(), msg  # says what is wrong, not only where
        assert "Traceback" not in msg and 'File "' not in msg, msg
        if not any(c in s for s in _strings(raw) for c in LINE_BREAKS):
            assert len(msg.splitlines()) == 1, msg
        assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__), msg


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ALL_PATHS), values)
def test_validator_on_mutated_studies_raises_only_study_error(path, value):
    raw = copy.deepcopy(VALID)
    _set(raw, path, value)
    _check(raw)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), values, max_size=6))
def test_validator_on_random_mappings_raises_only_study_error(raw):
    _check(raw)


@settings(max_examples=100, deadline=None)
@given(st.one_of(values, st.lists(values)))
def test_validator_on_random_documents(raw):
    _check(raw)


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("fz")
    w = TrialWriter(str(root), "s", "good", {"deq.init": "skip"}, {"seed": 0})
    w.add_epoch(0, {"test_acc": 0.5})
    w.flush()
    return (root / "s" / "trials" / "good.parquet").read_bytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_loader_skips_random_and_mutated_files_with_a_warning(data, good_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("ld")
    folder = root / "s" / "trials"
    folder.mkdir(parents=True)
    (folder / "good.parquet").write_bytes(good_file)
    kind = data.draw(st.sampled_from(["random", "truncated", "flipped"]))
    if kind == "random":
        blob = data.draw(st.binary(max_size=2048))
    elif kind == "truncated":
        blob = good_file[:data.draw(st.integers(0, len(good_file) - 1))]
    else:
        i = data.draw(st.integers(0, len(good_file) - 1))
        blob = good_file[:i] + bytes([good_file[i] ^ data.draw(st.integers(1, 255))]) + good_file[i + 1:]
    (folder / "bad.parquet").write_bytes(blob)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = load(root / "s")
    assert "good" in set(res.trials.trial_id)
    if res.skipped:  # a mutation pyarrow still reads is data, not an error; anything else is named
        assert any("bad.parquet" in s for s in res.skipped)
        assert any("bad.parquet" in str(w.message) for w in caught)


# --------------------------------------------------------------------------- what readers show of hostile files


# any text, biased to what terminals and Markdown act on (escapes, line breaks, bidi, markup, block starts)
pieces = st.one_of(st.characters(), st.sampled_from(list("\x1b\x07\n\r\t\u202e\u2028-+=.)(![]<>*_`~$#&|:\\ ")
                                                    + ["http://x", "www.y.z", "1. ", "    ", "---", ":red["]))
texts = st.lists(pieces, max_size=25).map("".join)


@settings(max_examples=500, deadline=None)
@given(texts)
def test_printable_text_has_no_control_character_and_keeps_the_rest(text):
    from deqlab.results import printable

    shown = printable(text)
    assert shown.isprintable() and len(shown.splitlines()) <= 1  # nothing recolours, retitles or breaks a line
    assert (shown == text) == text.isprintable()


@settings(max_examples=500, deadline=None)
@given(texts)
def test_markdown_text_renders_as_the_text_itself(text):
    """What the dashboard hands Streamlit's Markdown: rendered by a CommonMark renderer (tables and
    strikethrough on, raw HTML on), it is one paragraph of exactly the printable text, no element in it."""
    import html

    from markdown_it import MarkdownIt

    from deqlab.report.render import markdown_text
    from deqlab.results import printable

    rendered = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown_text(text))
    shown = printable(text).strip(" ")
    if not shown:
        assert rendered == ""
        return
    assert rendered.startswith("<p>") and rendered.endswith("</p>\n") and "<" not in rendered[3:-5], rendered
    assert html.unescape(rendered[3:-5]) == shown


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=20), column=st.sampled_from(["trial_id", "study"]))
def test_loader_passes_only_safe_names(name, column, good_file, tmp_path_factory):
    """A trials file may carry any name: the reader gives the name out only when it is a safe one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from deqlab.results.schema import is_safe_name

    root = tmp_path_factory.mktemp("nm")
    folder = root / "s" / "trials"
    folder.mkdir(parents=True)
    (folder / "good.parquet").write_bytes(good_file)
    row = {"study": "s", "trial_id": "t", "epoch": 0, "status": "completed", **{column: name}}
    pq.write_table(pa.table({k: [v] for k, v in row.items()}), folder / "named.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = load(root / "s")
    assert "good" in set(res.trials.trial_id)
    assert all(is_safe_name(v) for c in ("study", "trial_id") for v in res.trials[c])
    assert (name in set(res.trials[column])) == is_safe_name(name)
    assert bool(res.skipped) != is_safe_name(name)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.integers(1, 3000).map(lambda n: (b"[" * n + b"]" * n)),
                 st.integers(1, 3000).map(lambda n: b"a: " * n + b"1")))
def test_a_results_folders_study_yaml_is_a_mapping_or_one_value_error(blob):
    from deqlab.results import load_spec

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "study.yaml").write_bytes(blob)
        try:
            spec = load_spec(d)
        except ValueError as exc:
            assert str(exc).startswith(f"unreadable study spec {d}/study.yaml: ") and exc.__cause__ is None
        else:
            assert isinstance(spec, dict)
