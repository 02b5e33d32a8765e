#!/usr/bin/env bash
# Create the venv and install deqlab into it (`make venv` runs this; so do `make quickstart` and `make test`).
#
# With uv (installed into the venv by pip, from the package registry) the install takes well under a
# minute; pip alone takes minutes. torch comes first, pinned, as its CPU build: PyPI's torch for Linux is a
# multi-GB CUDA build, and the project's range would otherwise admit it. Dependencies live in pyproject.toml
# only; uv gets pip's configured sources (scripts/pip_sources.py), so it installs from where pip would.
#
# usage: scripts/install.sh VENV EXTRAS     env: PYTHON (default python3), TORCH_VERSION (2.13.0),
#                                                TORCH_BACKEND (cpu; e.g. auto or cu128 for a GPU machine, uv only)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-dev}
torch=${TORCH_VERSION:-2.13.0}
backend=${TORCH_BACKEND:-cpu}
py=$venv/bin/python
start=$SECONDS

[ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv"
# -qq: pip's warnings about configured sources that lack a package are noise here; errors still show
if "$py" -m pip install -qq uv && [ -x "$venv/bin/uv" ]; then
    echo "installing deqlab into $venv with uv (torch $torch, $backend build) ..."
    mapfile -t sources < <("$py" scripts/pip_sources.py "$py")
    uv=("$venv/bin/uv" pip install --python "$py" --quiet ${sources[@]+"${sources[@]}"})
    # The CPU build from pip's own sources (a wheel folder, a mirror) if they have it; otherwise from the
    # PyTorch index for the backend (uv's --torch-backend), never PyPI's CUDA build by accident.
    if [ "$backend" != cpu ] || ! "${uv[@]}" "torch==$torch+cpu" 2>/dev/null; then
        "${uv[@]}" "torch==$torch" --torch-backend "$backend"
    fi
    "${uv[@]}" -e ".[$extras]"
else
    echo "uv could not be installed: installing deqlab into $venv with pip (several minutes) ..."
    "$py" -m pip install -qq --upgrade pip
    "$py" -m pip install -qq "torch==$torch+cpu" 2>/dev/null \
        || "$py" -m pip install -qq "torch==$torch" --index-url https://download.pytorch.org/whl/cpu
    "$py" -m pip install -qq -e ".[$extras]"
fi
echo "installed in $((SECONDS - start)) s (torch $("$py" -c 'from importlib.metadata import version; print(version("torch"))'))"
