"""`deqlab dashboard`: serve the Streamlit app over study results (read-only)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .common import EXIT_FAILED, results_dirs

def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 1..65535, got {value}")
    return value


def configure_dashboard(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="*", metavar="DIR", default=["results"],
                   help="study directories, or results roots holding studies (default: results)")
    p.add_argument("--port", type=port, default=8501, help="port to serve on (default: 8501)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the results)")


def dashboard_app() -> Path:
    """The Streamlit script: $DEQLAB_DASHBOARD_APP, else dashboard/app.py of the checkout deqlab runs from.

    The app is a top-level script, not part of the package (deqlab itself
    never imports Streamlit UI code), so it is found next to the package of an
    editable install (`pip install -e .`, what the Makefile does).
    """
    env = os.environ.get("DEQLAB_DASHBOARD_APP")
    app = Path(env) if env else Path(__file__).resolve().parents[2] / "dashboard" / "app.py"
    if not app.is_file():
        raise ValueError(f"dashboard app not found at {app}: run deqlab from its checkout (pip install -e .) "
                         f"or set DEQLAB_DASHBOARD_APP to dashboard/app.py")
    return app


def dashboard_command(args: argparse.Namespace) -> tuple[list[str], dict]:
    """(argv, environment) of the Streamlit server; the directories travel in $DEQLAB_DASHBOARD_DIRS."""
    from ..results import absolute

    dirs = [absolute(d) for d in results_dirs(args.dirs)]
    argv = [sys.executable, "-m", "streamlit", "run", str(dashboard_app()),
            "--server.headless", "true", "--server.address", args.host, "--server.port", str(args.port),
            "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer",
            "--client.showErrorDetails", "none"]  # no server tracebacks or paths in the browser
    for host in allowed_hosts(args.host):  # DNS rebinding: a page of evil.example must not reach the server
        argv += ["--server.allowedHosts", host]
    return argv, {**os.environ, "DEQLAB_DASHBOARD_DIRS": os.pathsep.join(dirs)}


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(host: str) -> list[str]:
    """The names a browser may use in its Host header: the loopback names, and `--host` when given (for a
    wildcard address, the machine's own names). Streamlit accepts any Host without this list, so a page of
    a foreign site whose name was rebound to 127.0.0.1 could open the WebSocket and read every study."""
    import socket

    names = [host] if host not in ("0.0.0.0", "::", "") else [socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys([*LOOPBACK_NAMES, *names]))


def run_dashboard(args: argparse.Namespace) -> int:
    from ..report.views import split_dirs

    argv, env = dashboard_command(args)
    print(f"deqlab dashboard on http://{args.host}:{args.port} (read-only) for "
          f"{', '.join(split_dirs(env['DEQLAB_DASHBOARD_DIRS']))}", flush=True)
    os.execvpe(argv[0], argv, env)  # the server replaces this process: signals reach it directly
    return EXIT_FAILED  # pragma: no cover (exec does not return)
