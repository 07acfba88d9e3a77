# The newcomer's commands: `make demo`, `make test`.  Each creates .venv if missing and installs
# the project with its pins (constraints.txt) first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export MLOPS_HOME   ?= $(CURDIR)/.mlops
export DAGSTER_HOME ?= $(MLOPS_HOME)/dagster

.PHONY: install demo test dev bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install  ## replay data, run the whole cycle through Dagster, print a summary
	$(BIN)/mlops-demo

test: install  ## the whole test suite (unit, asset, end-to-end)
	$(BIN)/python -m pytest

dev: install  ## the Dagster UI + daemon on the local instance (http://127.0.0.1:3000)
	$(BIN)/python -c "from mlops_assets.settings import ensure_dagster_home as e; e()"
	$(BIN)/dagster dev -w workspace.yaml

clean:  ## remove local state (landing zone, lake, MLflow, Dagster instance)
	rm -rf $(MLOPS_HOME)
