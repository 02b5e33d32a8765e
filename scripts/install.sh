#!/usr/bin/env bash
# Create the venv and install deqlab into it (`make venv` runs this; so do `make quickstart` and `make test`).
#
# With uv (installed into the venv by pip, from the package registry) the install costs a fraction of
# pip's time (23-38 s of CPU against 113 s: docs/benchmarks.md). torch comes first, pinned, as its CPU build: PyPI's torch for Linux is a
# multi-GB CUDA build, and the project's range would otherwise admit it. Dependencies live in pyproject.toml
# only; uv gets pip's configured sources (scripts/pip_sources.py), so it installs from where pip would.
#
# usage: scripts/install.sh VENV EXTRAS
# env:   PYTHON (python3), TORCH_VERSION (2.13.0), TORCH_BACKEND (cpu; auto or cu128... on a GPU machine, uv only),
#        INSTALLER (uv; pip: pip alone, as before uv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-dev}
python=${PYTHON:-python3}
torch=${TORCH_VERSION:-2.13.0}
backend=${TORCH_BACKEND:-cpu}
py=$venv/bin/python
start=$SECONDS

venv_pip() {  # the venv's own pip (a venv made here starts without one: ensurepip costs seconds)
    "$py" -m pip --version >/dev/null 2>&1 || "$py" -m ensurepip --default-pip >/dev/null
}
install_uv() {  # by the interpreter's pip into the venv (pip >= 22.3), else by the venv's own pip; silent:
    [ -x "$venv/bin/uv" ] && return  # without uv, the line below says so and pip's own errors follow if any
    "$python" -m pip --python "$py" install -qq uv 2>/dev/null \
        || { venv_pip && "$py" -m pip install -qq uv 2>/dev/null; }
}

[ -x "$py" ] || "$python" -m venv --without-pip "$venv"
if [ "${INSTALLER:-uv}" = uv ] && install_uv && [ -x "$venv/bin/uv" ]; then
    echo "installing deqlab into $venv with uv (torch $torch, $backend build) ..."
    mapfile -t sources < <("$py" scripts/pip_sources.py "$python")
    uv=("$venv/bin/uv" pip install --python "$py" --quiet ${sources[@]+"${sources[@]}"})
    # The CPU build from pip's own sources (a wheel folder, a mirror) where they have it; otherwise from
    # the PyTorch index for the backend (uv's --torch-backend): never PyPI's CUDA build by accident.
    if [ "$backend" != cpu ] || ! "${uv[@]}" "torch==$torch+cpu" 2>/dev/null; then
        "${uv[@]}" "torch==$torch" --torch-backend "$backend" \
            || { echo "no torch $torch ($backend build) in pip's sources nor on the PyTorch index" >&2; exit 1; }
    fi
    "${uv[@]}" -e ".[$extras]" pip  # pip too: `pip install` in the activated venv stays in the venv
else
    [ "${INSTALLER:-uv}" = pip ] || echo -n "uv could not be installed: "
    echo "installing deqlab into $venv with pip (several minutes) ..."
    venv_pip
    "$py" -m pip install -qq --upgrade pip
    "$py" -m pip install -qq "torch==$torch+cpu" 2>/dev/null \
        || "$py" -m pip install -qq "torch==$torch" --index-url https://download.pytorch.org/whl/cpu
    "$py" -m pip install -qq -e ".[$extras]"
fi
echo "installed in $((SECONDS - start)) s (torch $("$py" -c 'from importlib.metadata import version as v; print(v("torch"))'))"
