"""Validating a configuration never imports torch (`deqlab validate` took 3.3 s when it did)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHECK = """
import sys
{body}
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("torch loaded:", loaded[:3])
"""


def _torch_loaded(body: str) -> str:
    out = subprocess.run([sys.executable, "-c", CHECK.format(body=body)], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_configs_and_study_specs_import_no_torch():
    body = ("import deqlab.run.config, deqlab.layers.config, deqlab.solvers.options, deqlab.models.catalog, "
            "deqlab.study.spec, deqlab.plugins, deqlab.data.sources, deqlab.study.own_code\n"
            "from deqlab.run import TrainConfig\n"
            "TrainConfig(model={'name': 'conv'}, deq={'solver': 'broyden', 'solver_options': {'memory': 4}})")
    assert "torch loaded: []" in _torch_loaded(body)


def test_deqlab_validate_imports_no_torch():
    body = ("from deqlab.cli import main\n"
            "assert main(['validate', 'studies/quickstart.yaml', 'studies/train_digits.yaml']) == 0")
    assert "torch loaded: []" in _torch_loaded(body)


def test_reports_and_the_dashboard_pages_import_no_torch():
    """A results folder copied from a cluster opens on a laptop without the training stack (architecture.md)."""
    body = ("import deqlab.results, deqlab.report.tables, deqlab.report.views, deqlab.report.figures\n"
            "sys.path.insert(0, 'dashboard')\n"
            "import compare, compare_sections, overview, trial_pages, export_page")
    assert "torch loaded: []" in _torch_loaded(body)
