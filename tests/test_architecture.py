"""The rooms of deqlab import in one direction only (docs/architecture.md): read from the source, not hoped.

Each rule names the deqlab rooms a room may import. A new arrow either belongs
in docs/architecture.md (and here) or is a layering mistake.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# room -> the other rooms it may import (names under deqlab/, a package or a top-level module)
ALLOWED = {
    "solvers": set(),
    "data": set(),
    "results": set(),
    "layers": {"solvers"},
    "models": {"layers", "solvers"},
    "run": {"solvers", "layers", "models", "data", "results"},
    "report": {"results"},
    "study": {"solvers", "data", "results", "report", "run"},
    "cli": {"solvers", "data", "results", "report", "run", "study", "models"},  # `deqlab models` lists the catalogue
    "dashboard": {"results", "report"},
    "__init__": set(),  # `deqlab` itself: its version and lazy names (deqlab.load_model), resolved on first use
}
SHARED = {"__version__", "_lazy", "plugins", "deqlab"}  # the package itself: its version, the lazy-import helper
# and the resolver of names that are not built in (imports nothing from deqlab: every room may ask it)


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if parts[0] == "deqlab" and len(parts) > 1 else parts[0]


def _imports(path: Path, package: str):
    """The deqlab modules `path` imports (absolute or relative), as dotted names."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "deqlab")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "deqlab":
                continue
            if target == "deqlab":  # `from deqlab import x` / `from .. import x`: x is the room
                yield from (f"deqlab.{a.name}" for a in node.names)
            else:
                yield target


def _edges():
    files = [(p, "deqlab") for p in (ROOT / "deqlab").rglob("*.py")]
    files += [(p, "dashboard") for p in (ROOT / "dashboard").glob("*.py")]
    for path, top in files:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        source = "dashboard" if top == "dashboard" else _room(module)
        for target in _imports(path, package.removesuffix(".__init__")):
            yield path.relative_to(ROOT), source, _room(target)


def test_every_import_follows_the_rooms_direction():
    wrong = sorted(f"{path}: {src} -> {dst}" for path, src, dst in _edges()
                   if src in ALLOWED and dst != src and dst not in SHARED and dst not in ALLOWED[src])
    assert not wrong, "imports against the direction of docs/architecture.md:\n" + "\n".join(wrong)


def test_every_room_is_known():
    """A new top-level module or package is placed in a room (and in the doc) before it is imported."""
    rooms = {src for _, src, _ in _edges()} | {dst for _, _, dst in _edges()}
    unknown = rooms - set(ALLOWED) - SHARED - {"__main__"}
    assert not unknown, f"rooms missing from ALLOWED and docs/architecture.md: {sorted(unknown)}"


def test_the_checker_sees_a_wrong_arrow(tmp_path):
    """The rule test can fail: a solver importing a model is caught."""
    bad = tmp_path / "deqlab" / "solvers" / "x.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from ..models import build\nfrom deqlab.run import train\n")
    found = {_room(t) for t in _imports(bad, "deqlab.solvers")}
    assert found == {"models", "run"}
    assert not found <= ALLOWED["solvers"]


def test_no_package_export_shares_a_submodule_name():
    """`from deqlab.run import provenance` must give the function: once a submodule of the same name is
    imported, Python binds the package attribute to the module and the lazy export is never consulted."""
    import importlib

    clashes = []
    for init in (ROOT / "deqlab").glob("*/__init__.py"):
        package = importlib.import_module(f"deqlab.{init.parent.name}")
        modules = {p.stem for p in init.parent.glob("*.py")} | {p.name for p in init.parent.iterdir() if p.is_dir()}
        clashes += [f"deqlab.{init.parent.name}.{n}" for n in getattr(package, "__all__", ()) if n in modules]
    assert not clashes, f"exports named like a submodule: {clashes}"
