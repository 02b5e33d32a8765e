"""`deqlab data get|list`: fetch a data set, list what is present."""

from __future__ import annotations

import argparse

from .common import EXIT_OK

def configure_data(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="{get,list}", required=True)
    get = sub.add_parser("get", help="fetch a data set into the data folder and verify its checksums")
    get.add_argument("name", help="data set name (see `deqlab data list`)")
    get.add_argument("--data-dir", default=None, help="data folder (default: $DEQLAB_DATA or ~/.cache/deqlab/data)")
    lst = sub.add_parser("list", help="list the data sets and whether they are present")
    lst.add_argument("--data-dir", default=None, help="data folder (default: $DEQLAB_DATA or ~/.cache/deqlab/data)")


def run_data(args: argparse.Namespace) -> int:
    from .. import data

    if args.data_command == "get":
        path = data.fetch(args.name, data_dir=args.data_dir)
        print(f"{args.name}: ready in {path}")
        return EXIT_OK
    from .. import plugins

    root = data.resolve_data_dir(args.data_dir)
    rows = [(name, *data.status(name, root)) for name in data.DATASETS]
    rows.append((data.NPZ, "your file", "data: {name: npz, path: FILE.npz}"))
    rows += [(name, f"plugin {target}", "installed package")
             for name, target in plugins.entry_points(plugins.DATASETS_GROUP).items()]
    header = ("name", "status", "how to get it")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    print(f"data folder: {root}")
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    print('your own: data: {name: "package.module:function", options: {...}} (docs/reference.md)')
    return EXIT_OK
