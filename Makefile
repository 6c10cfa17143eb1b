# Two commands are the whole set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install reference clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first, so the project install finds it satisfied (no CUDA download).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Every method on the embedded default, computed afresh into runs/demo (not tracked).
run: $(STAMP)
	$(VENV)/bin/mmunlearn demo --out runs/demo

# Regenerate the committed reference results (what `make test` checks against).
reference: $(STAMP)
	rm -rf results/demo
	$(VENV)/bin/mmunlearn demo --out results/demo

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
