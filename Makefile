# Two commands do all set-up on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned, its CPU build: a loose range pulls a multi-GB CUDA build (see docs/design.md).
# On a GPU machine: `make clean venv TORCH_BACKEND=auto` (uv picks the CUDA build for the driver).
TORCH_VERSION ?= 2.13.0
TORCH_BACKEND ?= cpu
EXTRAS ?= dev
INSTALLER ?= uv
export PYTHON TORCH_VERSION TORCH_BACKEND INSTALLER

.PHONY: venv quickstart demo test bench bench-setup gpu-check clean

# uv, installed into the venv with pip (pip alone if uv cannot be installed): scripts/install.sh.
$(VENV)/.installed: pyproject.toml scripts/install.sh scripts/pip_sources.py
	@scripts/install.sh $(VENV) $(EXTRAS)
	@touch $@

venv: $(VENV)/.installed

# The quickstart study on the embedded digits data with a local Ray; prints the comparison table and
# the dashboard and export commands. Each run gets its own name, so earlier results are kept.
quickstart: venv
	@$(VENV)/bin/deqlab run studies/quickstart.yaml --storage results \
		--name quickstart-$$(date +%Y%m%d-%H%M%S)

# The seed check (y = 2x for every init mode and both solver kinds), no Ray.
demo: venv
	$(VENV)/bin/deqlab demo --out demo_out

test: venv
	$(PY) -m pytest

bench: venv
	@scripts/install.sh $(VENV) $(EXTRAS),bench
	$(PY) benchmarks/solvers.py

# A fresh clone's `make quickstart`, install and study timed separately, uv's cache empty (docs/benchmarks.md).
bench-setup:
	$(PYTHON) benchmarks/fresh_clone.py

# The GPU path on one GPU in < 5 minutes (NCCL study, 4 trials sharing the GPU, solvers and training
# on CUDA vs CPU), one table; exits 2 on a machine without CUDA.
gpu-check: venv
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
