# fedsafe: `make simulate` and `make test` create the environment themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.fedsafe-installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
export RAY_USAGE_STATS_ENABLED := 0
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: env simulate test test-heavy lint sweep bench gpu-check fashion-mnist clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel setuptools
	# torch first, from the pin: an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev,banks]"
	touch $(STAMP)

env: $(STAMP)

simulate: env
	$(VENV)/bin/fedsafe simulate $(ARGS)

# Two workers (pytest-xdist): much of a test's time is spent waiting on processes it started
# (Ray actors, SuperNodes), so two workers cut the wall time on CI's 2 cores.
TEST_WORKERS ?= 2

test: env
	$(VENV)/bin/python -m pytest -q -m "not heavy" -n $(TEST_WORKERS) $(ARGS)

# Real processes: SuperLink + SuperNodes with TLS and node auth, kills, resume, `flwr run .`.
test-heavy: env
	$(VENV)/bin/python -m pytest -q -m heavy $(ARGS)

LINT_DIRS := common server client simulations tests

# mypy sees the folders as the installed package does (fedsafe.common, ...): through a link
# named `fedsafe` to this checkout, in an ignored build folder.
MYPY_ROOT := .build/mypy

lint: env
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	mkdir -p $(MYPY_ROOT) && ln -sfn "$(CURDIR)" $(MYPY_ROOT)/fedsafe
	MYPYPATH=$(MYPY_ROOT) $(VENV)/bin/mypy --explicit-package-bases \
	  $(addprefix $(MYPY_ROOT)/fedsafe/,common server client simulations)

# One table per federation: privacy off / epsilon 1 / 3 / 8, mean and spread over 3 seeds (fresh
# budget stores per job: a non-private job would otherwise leave every site's epsilon infinite).
SWEEP_FEDERATIONS ?= hospitals banks
SWEEP_DIR := runs/sweep-$(shell date +%Y%m%d-%H%M%S)

sweep: env
	for fed in $(SWEEP_FEDERATIONS); do \
	  $(VENV)/bin/fedsafe simulate -m federation=$$fed privacy=eps1,eps3,eps8,off seed=0,1,2 \
	    federation.fresh_budget=true hydra.sweep.dir=$(SWEEP_DIR)/$$fed $(ARGS) || exit 1; \
	done
	$(VENV)/bin/fedsafe sweep-table $(SWEEP_DIR)

bench: env
	$(VENV)/bin/python -m fedsafe.simulations.bench $(ARGS)

# On a CUDA machine (a CUDA build of torch in the environment): the DP step and one simulated
# round on the GPU, with figures; exits 2 where torch sees no CUDA device. ARGS=--device=cpu here.
gpu-check: env
	$(VENV)/bin/python -m fedsafe.simulations.bench.gpu_check $(ARGS)

fashion-mnist:
	apt-get update -q && apt-get install -y -q dataset-fashion-mnist

clean:
	rm -rf $(VENV) runs outputs multirun .build .pytest_cache .ruff_cache .mypy_cache
