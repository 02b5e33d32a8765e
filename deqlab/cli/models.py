"""`deqlab models`: the built-in models and those installed packages register (entry points `deqlab.models`)."""

from __future__ import annotations

import argparse

from .common import EXIT_OK


def configure_models(p: argparse.ArgumentParser) -> None:
    p.epilog = "Your own model needs no registration: model: {name: \"package.module:Class\"} (docs/reference.md)."


def run_models(args: argparse.Namespace) -> int:
    from .. import plugins
    from ..models.catalog import MODELS

    rows = [(name, "built in", "yes" if info.deq else "no", ", ".join(info.options)) for name, info in MODELS.items()]
    # plugins are listed from their packages' metadata: nothing is imported until a study names one
    rows += [(name, f"plugin {target}", "-", "-") for name, target in plugins.entry_points(plugins.MODELS_GROUP).items()]
    header = ("name", "source", "DEQ layer", "options")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print("your own: model: {name: \"package.module:Class\"} (a deqlab.models.DEQModel or Model subclass)")
    return EXIT_OK
