# Two commands are the whole set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test install reference robustness clear clean lint typecheck docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first, so the project install finds it satisfied (no CUDA download).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Every method on the embedded default, computed afresh into runs/demo (not tracked): one seed and at
# most DEMO_LIMIT questions per cell, so it stays within 10 minutes on 2 cores (docs/reference-results.md).
DEMO_LIMIT ?= 20
run: $(STAMP)
	$(VENV)/bin/mmunlearn demo --limit $(DEMO_LIMIT) --out runs/demo

# Regenerate the committed reference results (what `make test` checks against): every run with seeds
# 0, 1, 2 and at most 60 questions per cell (a seed-independent run runs once).
reference: $(STAMP)
	rm -rf results/demo
	$(VENV)/bin/mmunlearn demo --seeds 3 --out results/demo

# Robustness of forgetting (README "Robustness"): the relearning attack's 2x2 recovery grid and the
# checkpoint sweep for GA, NPO, MANU and MMUnlearner (vanilla as the reference row), on the forget and
# retain sets (the four-set tables are `make run`'s); under 10 min on 2 cores.
robustness: $(STAMP)
	rm -rf results/robustness
	$(VENV)/bin/mmunlearn demo --methods vanilla ga npo manu mmunlearner --manu-alphas 0.3 --sets forget retain \
		--tasks classification generation cloze --stages relearn --eval-every 8 --out results/robustness
	$(PY) scripts/robustness_grid.py results/robustness

# Every method on the mini-CLEAR (forget10: 6 people) under both CLEAR protocols: the official one, and
# MMUnlearner's under its own target (forget the face, keep the facts); 3 min 18 s on 2 cores.
MINI_CLEAR := harness/embedded/assets/mini-clear
clear: $(STAMP)
	rm -rf results/clear
	$(VENV)/bin/mmunlearn demo --bench $(MINI_CLEAR) --forget 10 --protocol clear --manu-alphas 0.3 \
		--out results/clear/official
	$(VENV)/bin/mmunlearn demo --bench $(MINI_CLEAR) --forget 10 --protocol clear-mmunlearner \
		--objective forget-visual --manu-alphas 0.3 --out results/clear/mmunlearner

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy reads the package under its installed names through links (see [tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	mkdir -p build/typecheck/mmunlearn
	for d in harness tasks methods stages benchmarks; do ln -sfn $(CURDIR)/$$d build/typecheck/mmunlearn/$$d; done
	$(VENV)/bin/mypy -p mmunlearn.harness -p mmunlearn.tasks -p mmunlearn.methods -p mmunlearn.stages -p mmunlearn.benchmarks

# The documentation site (mkdocs, material theme) into build/site; --strict turns a broken link,
# a missing page or a page left out of the navigation into a failure.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict  # not --quiet: it hides the warnings --strict counts

test: lint typecheck docs
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build *.egg-info
