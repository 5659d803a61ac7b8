# Two commands for a newcomer: `make demo` (set up + run the embedded pretraining demo) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU wheels by default; on a GPU machine: make setup TORCH_SPEC="torch==2.13.0 torchvision==0.28.0" TORCH_INDEX=...
TORCH_SPEC ?= torch==2.13.0 torchvision==0.28.0
STAMP := $(VENV)/.setup-stamp

.PHONY: setup demo test test-fast bench cluster-up cluster-down clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC) -c constraints.txt
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

cluster-up: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/local_cluster.sh start

cluster-down:
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/local_cluster.sh stop

clean:
	rm -rf data runs mlruns mlflow.db .cluster
