"""Time `make quickstart` on a fresh clone, as a new user runs it: the install (venv, uv, torch, the project
with its extras) and the study, separately, with uv's cache empty.

    python3 benchmarks/fresh_clone.py               # one run; --repeat 3 for a loaded machine
    make bench-setup                                # the same

Clones this repository's HEAD (committed work only) into a new temporary folder, runs `make quickstart`
there with UV_CACHE_DIR set to a new empty folder, and splits the wall time at the install's last line
(`installed in ...`). Prints the first screen of the first run, then one Markdown row per run: install,
study and total wall seconds, the mean 1-minute load average during the run (on a shared machine the
wall times grow with it), and the torch build installed. Standard library only: it runs before any venv
exists. Deletes the clone and the cache unless --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALLED = re.compile(r"installed in \d+ s \(torch (\S+)\)")


def sample_load(samples: list, stop: threading.Event) -> None:
    while True:
        samples.append(os.getloadavg()[0])
        if stop.wait(5):
            return


def one_run(keep: bool, show: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="deqlab-fresh-"))
    clone, cache = work / "deqlab", work / "uv-cache"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {**os.environ, "UV_CACHE_DIR": str(cache)}
    env.pop("VIRTUAL_ENV", None)
    loads, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(loads, stop), daemon=True)
    sampler.start()
    t0 = time.monotonic()
    proc = subprocess.Popen(["make", "quickstart"], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    installed_at, torch, lines = None, None, []
    for line in proc.stdout:
        lines.append(line)
        if show:
            print(line, end="", flush=True)
        match = INSTALLED.search(line)
        if match and installed_at is None:
            installed_at, torch = time.monotonic() - t0, match.group(1)
    code = proc.wait()
    total = time.monotonic() - t0
    stop.set()
    sampler.join()
    if code != 0 or installed_at is None:
        sys.exit(f"make quickstart failed (exit {code}) in {clone}:\n" + "".join(lines[-40:]))
    row = {"install_s": installed_at, "study_s": total - installed_at, "total_s": total,
           "load": sum(loads) / len(loads), "torch": torch}
    if keep:
        print(f"kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=1, help="runs, each on its own fresh clone and empty cache")
    p.add_argument("--keep", action="store_true", help="keep the clones and caches")
    p.add_argument("--quiet", action="store_true", help="do not show the first run's output")
    args = p.parse_args()
    rows = [one_run(args.keep, show=not args.quiet and i == 0) for i in range(args.repeat)]
    print(f"\n{os.cpu_count()} CPUs; uv cache empty; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| run | install (s) | study (s) | total (s) | mean load | torch |")
    print("|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['install_s']:.1f} | {r['study_s']:.1f} | {r['total_s']:.1f} | {r['load']:.1f} "
              f"| {r['torch']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
