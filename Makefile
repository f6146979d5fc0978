# rdmx: two commands on a fresh machine.
#   make demo   create .venv, install rdmx + every plugin in plugins/, train the quickstart
#   make test   the same environment, then the whole test suite (offline, 2 workers)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGIN_DIRS := $(sort $(dir $(wildcard plugins/*/pyproject.toml)))
STAMP := $(VENV)/.rdmx-installed
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test bench startup clean

$(STAMP): pyproject.toml $(addsuffix pyproject.toml,$(PLUGIN_DIRS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]" $(addprefix -e ,$(PLUGIN_DIRS))
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/rdmx run recipes/quickstart.toml

test: install
	$(BIN)/python -m pytest -n 2 -q

bench: install
	$(BIN)/python benchmarks/startup.py

clean:
	rm -rf $(VENV) runs .rdmx-cache mlflow.db .mlflow.db.lock mlruns
