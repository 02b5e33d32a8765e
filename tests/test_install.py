"""scripts/pip_sources.py: pip's configured sources become uv's options, with pip's precedence, so
`make venv` installs with uv from where pip would (this machine's pip finds torch's CPU build in a wheel
folder that uv would never look in)."""

import importlib.util
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("pip_sources", REPO / "scripts" / "pip_sources.py")
pip_sources = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_sources)

# `pip config list` on a machine with a wheel folder, two local indexes and a constraints file
LISTED = """global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple'
global.find-links='/opt/wheels'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
"""


def test_wheel_folder_indexes_and_constraints_become_uv_options():
    assert pip_sources.uv_args(pip_sources.parse_config_list(LISTED)) == [
        "--index", "file:///opt/pypi/simple", "--index", "file:///opt/pypi-more/simple",
        "--find-links", "/opt/wheels", "--constraint", "/etc/xdg/pip/constraints.txt",
        "--index-strategy", "unsafe-best-match"]


def test_pip_precedence_environment_then_install_section_then_global():
    items = pip_sources.parse_config_list(
        "global.index-url='https://global.example/simple'\n"
        "install.index-url='https://install.example/simple'\n"
        "global.find-links='/global/wheels'\n"
        ":env:.find-links='/env/a /env/b'\n"
        ":env:.no-index='true'\n")
    assert pip_sources.uv_args(items) == ["--no-index", "--default-index", "https://install.example/simple",
                                          "--find-links", "/env/a", "--find-links", "/env/b"]


def test_no_configuration_no_options_and_bad_lines_skipped():
    assert pip_sources.uv_args(pip_sources.parse_config_list("")) == []
    assert pip_sources.parse_config_list("global.find-links=unquoted\nnot a setting\n") == {}
    assert pip_sources.pip_config("/nonexistent/python") == {}


def test_install_script_parses():
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "install.sh")]).returncode == 0
