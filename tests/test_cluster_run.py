"""`deqlab run` as a cluster user starts it: from the home folder that holds a checkout named `deqlab/`.

The package is imported the way `pip install -e` (cluster.yaml) makes it importable: through an import hook
that Python consults after the paths on `sys.path`. The checkout root on a worker's path (Ray adds the
driver's folder there) then wins as an empty namespace package unless the driver keeps it off.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_factory import TINY

from deqlab.results import load

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
REPO = Path(__file__).resolve().parent.parent

EDITABLE_HOOK = '''
import sys
from importlib.machinery import PathFinder

class EditableFinder:  # what setuptools' editable install puts on sys.meta_path, after PathFinder
    @classmethod
    def find_spec(cls, fullname, path=None, target=None):
        if fullname == "deqlab":
            return PathFinder.find_spec(fullname, path=[{root!r}])
        return None

sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, EditableFinder)
'''


def deqlab_home(tmp_path: Path) -> tuple[Path, dict, list]:
    """A home folder holding `deqlab/` (a link to this checkout), and the env + command of an installed
    `deqlab` console script whose package comes from an editable-install import hook."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "deqlab").symlink_to(REPO, target_is_directory=True)
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(EDITABLE_HOOK.format(root=str(REPO)))
    bin_dir = tmp_path / "bin"  # a console script's folder is on sys.path, never the caller's folder
    bin_dir.mkdir()
    (bin_dir / "deqlab_cli.py").write_text("import sys\nfrom deqlab.cli import main\nsys.exit(main())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(hook), RAY_AUTH_MODE="disabled")
    return home, env, [sys.executable, str(bin_dir / "deqlab_cli.py")]


def test_study_runs_from_the_parent_of_a_checkout_named_deqlab(tmp_path):
    home, env, cli = deqlab_home(tmp_path)
    raw = {"name": "fromhome", "base": {**TINY, "epochs": 1}, "space": {"seed": {"grid": [0, 1]}},
           "objectives": [{"metric": "test_acc", "mode": "max"}], "search": {"algorithm": "grid"}}
    (home / "fromhome.yaml").write_text(yaml.safe_dump(raw))
    out = subprocess.run(cli + ["run", "fromhome.yaml", "--storage", "results", "--num-cpus", "2"], cwd=home,
                         env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = load(home / "results" / "fromhome").trials
    assert len(rows) == 2 and (rows.status == "completed").all(), rows[["trial_id", "status"]]
