"""Time `make quickstart` on a fresh clone, as a new user runs it: the install (venv, uv, torch, the project
with its extras) and the study, separately, with uv's cache empty.

    python3 benchmarks/fresh_clone.py               # one run; --repeat 3 for a loaded machine
    make bench-setup                                # the same

Clones this repository's HEAD (committed work only) into a new temporary folder and runs there, with
UV_CACHE_DIR set to a new empty folder, what `make quickstart` runs: `make venv` (the install), then
`make quickstart` (the study; the venv is there). Prints the first screen of the first run, then one
Markdown row per run: install, study and total wall seconds, the install's CPU seconds (user + system of
uv, pip and the rest: less sensitive to other load than wall time), the mean 1-minute load average during
the run (on a shared machine the wall times grow with it), and the torch build installed. Standard
library only: it runs before any venv exists. Deletes the clone and the cache unless --keep.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
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


def run_make(target: str, clone: Path, env: dict, show: bool) -> tuple[float, float, list[str]]:
    """`make TARGET` in the clone: wall seconds, CPU seconds of its process tree (reaped), its output."""
    cpu0, t0 = cpu_seconds(), time.monotonic()
    proc = subprocess.Popen(["make", target], cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if show:
            print(line, end="", flush=True)
    if proc.wait() != 0:
        sys.exit(f"make {target} failed (exit {proc.returncode}) in {clone}:\n" + "".join(lines[-40:]))
    return time.monotonic() - t0, cpu_seconds() - cpu0, lines


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(keep: bool, show: bool, installer: str, study: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="deqlab-fresh-"))
    clone, cache = work / "deqlab", work / "uv-cache"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    env = {**os.environ, "UV_CACHE_DIR": str(cache), "INSTALLER": installer}
    env.pop("VIRTUAL_ENV", None)
    loads, stop = [], threading.Event()
    sampler = threading.Thread(target=sample_load, args=(loads, stop), daemon=True)
    sampler.start()
    install_s, install_cpu, lines = run_make("venv", clone, env, show)
    study_s = run_make("quickstart", clone, env, show)[0] if study else float("nan")
    stop.set()
    sampler.join()
    torch = next((m.group(1) for m in map(INSTALLED.search, lines) if m), "?")
    if keep:
        print(f"kept: {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return {"install_s": install_s, "install_cpu": install_cpu, "study_s": study_s,
            "total_s": install_s + study_s, "load": sum(loads) / len(loads), "torch": torch}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=1, help="runs, each on its own fresh clone and empty cache")
    p.add_argument("--keep", action="store_true", help="keep the clones and caches")
    p.add_argument("--quiet", action="store_true", help="do not show the first run's output")
    p.add_argument("--installer", choices=("uv", "pip"), default="uv", help="pip: the install without uv, to compare")
    p.add_argument("--install-only", action="store_true", help="time the install only, not the study")
    args = p.parse_args()
    rows = [one_run(args.keep, not args.quiet and i == 0, args.installer, not args.install_only)
            for i in range(args.repeat)]
    print(f"\n{os.cpu_count()} CPUs; {args.installer}; uv cache empty; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| run | install (s) | install CPU (s) | study (s) | total (s) | mean load | torch |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for i, r in enumerate(rows, 1):
        print(f"| {i} | {r['install_s']:.1f} | {r['install_cpu']:.1f} | {r['study_s']:.1f} | {r['total_s']:.1f} "
              f"| {r['load']:.1f} | {r['torch']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
