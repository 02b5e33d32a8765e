"""pip's configured package sources, printed as `uv pip install` options (one per line), so uv installs
from where pip would.

uv reads no pip configuration. Where pip is pointed at a mirror (index-url), extra indexes, a folder of
wheels (find-links) or a constraints file, uv would otherwise resolve against PyPI alone: on a machine
whose CPU build of torch lies in a find-links folder, it would download PyPI's multi-GB CUDA build.
Prints nothing where pip has none of these settings. Standard library only: it runs before anything is
installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip's precedence for `pip install`: PIP_* environment variables, then the [install] section, then [global]
SECTIONS = (":env:", "install", "global")
TRUE = {"1", "true", "yes", "on"}


def pip_config(python: str) -> dict[str, str]:
    """`pip config list` of this interpreter's pip ({"global.find-links": "/opt/wheels", ...}); {} if it fails."""
    try:
        out = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_config_list(out.stdout) if out.returncode == 0 else {}


def parse_config_list(text: str) -> dict[str, str]:
    """The lines `section.key='value'` that `pip config list` prints (values as Python literals)."""
    items = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        try:
            items[key.strip()] = str(ast.literal_eval(value.strip())) if sep else None
        except (ValueError, SyntaxError):
            continue
    return {k: v for k, v in items.items() if v is not None}


def setting(items: dict[str, str], name: str) -> list[str]:
    """The value pip uses for `name`, split on whitespace as pip splits list options."""
    for section in SECTIONS:
        if f"{section}.{name}" in items:
            return items[f"{section}.{name}"].split()
    return []


def uv_args(items: dict[str, str]) -> list[str]:
    """The `uv pip install` options that give uv pip's sources."""
    args = []
    if any(v.lower() in TRUE for v in setting(items, "no-index")):
        args.append("--no-index")
    for url in setting(items, "index-url")[:1]:
        args += ["--default-index", url]
    extra = setting(items, "extra-index-url")
    for url in extra:
        args += ["--index", url]
    for link in setting(items, "find-links"):
        args += ["--find-links", link]
    for path in setting(items, "constraint"):
        args += ["--constraint", path]
    if extra:
        # pip takes the best version over all indexes; uv's default stops at the first index that has the
        # package, and a mirror holding an older release than pyproject asks for would fail the install
        args += ["--index-strategy", "unsafe-best-match"]
    return args


if __name__ == "__main__":
    for arg in uv_args(pip_config(sys.argv[1] if len(sys.argv) > 1 else sys.executable)):
        print(arg)
