# Two commands for a newcomer: `make demo` (set up + run the embedded pretraining demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
# Where torch comes from. Empty (default): pip's configured index; plain PyPI serves the CUDA build on
# Linux x86_64 (several GB of nvidia-* wheels). For CPU-only wheels (~200 MB):
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
# or a CUDA build: TORCH_INDEX=https://download.pytorch.org/whl/cu128. It is passed as --index-url (not
# --extra-index-url), so pip takes torch, torchvision and their dependencies from that index only: with
# --extra-index-url pip would choose between both indexes by version and might pick PyPI's CUDA wheel.
# Only the torch step uses it; the rest of the project comes from pip's usual index.
TORCH_INDEX ?=
TORCH_INDEX_ARGS := $(if $(strip $(TORCH_INDEX)),--index-url $(strip $(TORCH_INDEX)))
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test test-fast bench bench-gpu cluster-up cluster-down clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_INDEX_ARGS) $(TORCH_SPEC) -c constraints.txt
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(PY) jobs/pretrain.py

test: setup
	$(PY) -m pytest -q --durations=15 tests

test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

bench: setup
	$(PY) benchmarks/run_all.py

# One unattended GPU run (<= 8 min on one GPU): runs/bench-gpu/gpu_bench.{json,md}.
# BENCH_GPU_ARGS=--smoke runs the same rows at tiny sizes on CPU.
BENCH_GPU_ARGS ?=
bench-gpu: setup
	$(PY) benchmarks/gpu.py --out runs/bench-gpu $(BENCH_GPU_ARGS)

cluster-up: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/local_cluster.sh start

cluster-down:
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/local_cluster.sh stop

clean:
	rm -rf data runs mlruns mlflow.db .cluster
