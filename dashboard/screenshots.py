"""One screenshot per dashboard page, in headless Chromium (as tests/test_dashboard.py drives it).

    python dashboard/screenshots.py results/quickstart-20250101-120000 --out docs/screenshots

Starts `deqlab dashboard` on a free localhost port, opens every page, waits
until Streamlit has finished running the script and every chart is drawn, and
writes `<page>.png` (1400 px wide, as tall as the page). Needs Playwright and
/usr/bin/chromium (`.ci/run` installs it).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PAGES = ("Overview", "Compare", "Search", "Trial detail", "Depth view", "Export")
DONE = "[data-testid='stApp'][data-test-script-state='notRunning']"
SETTLED = "() => document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0 " \
          "&& document.querySelector('h1, h2') !== null"
# Streamlit scrolls inside its own frame, so a full-page shot is the viewport: make it as tall as the page
HEIGHT = {"Compare": 4300, "Trial detail": 2300}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, timeout: float = 90) -> None:
    """Until Streamlit's health endpoint answers (it answers "ok" once the server is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit("the dashboard did not start") from None
            time.sleep(0.5)


def shoot(dirs: list[str], out: Path, chromium: str = "/usr/bin/chromium") -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "deqlab", "dashboard", *dirs, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    written = []
    try:
        _wait_healthy(port)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for name in PAGES:
                page = browser.new_page(viewport={"width": 1400, "height": HEIGHT.get(name, 1400)})
                page.goto(f"http://127.0.0.1:{port}/?page={name.replace(' ', '+')}")
                page.wait_for_selector(DONE, timeout=120_000)
                page.wait_for_function(SETTLED, timeout=120_000)  # placeholders replaced by the real elements
                page.wait_for_timeout(3000)  # plotly draws after the script run ends
                path = out / f"{name.lower().replace(' ', '_')}.png"
                page.screenshot(path=str(path), full_page=True)
                page.close()
                written.append(path)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", help="study directories or results roots")
    parser.add_argument("--out", default="docs/screenshots", help="folder for the PNG files")
    args = parser.parse_args()
    for path in shoot(args.dirs, Path(args.out)):
        print(path)


if __name__ == "__main__":
    main()
