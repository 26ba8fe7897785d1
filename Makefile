# make demo   set up .venv and train the seed's MNIST command
# make test   set up .venv and run the test suite (what CI runs)
# make test-fast  the inner loop: the suite without the slow end-to-end tests
# make fuzz   explore new command lines: many more random examples, a new draw each time
# make mutants  mutation testing (cosmic-ray) in a copy of the tree: MODULE=..., SAMPLE=40, SEED=1
VENV ?= .venv
PY := $(VENV)/bin/python
export MPLCONFIGDIR ?= $(CURDIR)/.cache/matplotlib
export NO_MKDOCS_2_WARNING = 1  # mkdocs-material's banner about its successor

.PHONY: setup demo demo-offline test test-fast fuzz mutants lint docs bench clean

setup: $(VENV)/.installed

# torch is pinned by constraints.txt to the CPU build; see docs/get-started.md "Choosing a torch build".
$(VENV)/.installed: pyproject.toml src/lab/pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]" -e src/lab
	touch $@

demo: setup
	$(PY) run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]"

demo-offline: setup   # Fashion-MNIST from Debian's dataset-fashion-mnist, no network needed
	$(PY) run.py --experiment_id=mnist --use_cuda=false --hidden_sizes="[64]" --dataset=fashion_mnist

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

fuzz: setup   # the suite's property tests use fixed examples; this profile draws new ones
	HYPOTHESIS_PROFILE=explore $(PY) -m pytest -n 2 --dist load tests/test_fuzz.py

# cosmic-ray edits the files it mutates, so it works on a copy (.cache/mutants/, which
# the tests import through PYTHONPATH); tests/mutants.toml names the modules, tests/mutants_run.py
# each module's tests. MODULE=path[,path] narrows it; SAMPLE=N draws N mutants per module
# (seeded by SEED; 0 = every mutant); the figures and survivors are printed at the end.
#   make mutants MODULE=src/expkit/training/averaging.py SAMPLE=40 SEED=1
MUTANTS ?= .cache/mutants
MODULE ?=
SAMPLE ?= 40
SEED ?= 1
mutants: setup
	$(PY) -m pip install -q -c constraints.txt -e ".[mutants]"
	$(PY) tests/mutants_config.py tests/mutants.toml "$(MODULE)" > /dev/null
	rm -rf $(MUTANTS) && mkdir -p $(MUTANTS)
	cp -r src tests pyproject.toml README.md $(MUTANTS)/
	mkdir -p $(MUTANTS)/original && cp -r src $(MUTANTS)/original/  # what a mutant is told from
	find $(MUTANTS) -name __pycache__ -prune -exec rm -rf {} +
	$(PY) tests/mutants_config.py tests/mutants.toml "$(MODULE)" > $(MUTANTS)/session.toml
	cd $(MUTANTS) && PATH=$(CURDIR)/$(VENV)/bin:$$PATH cosmic-ray init session.toml session.sqlite
	cd $(MUTANTS) && $(CURDIR)/$(PY) tests/mutants_summary.py --skip-annotations session.sqlite
	cd $(MUTANTS) && $(CURDIR)/$(PY) tests/mutants_summary.py --sample $(SAMPLE) --seed $(SEED) session.sqlite
	cd $(MUTANTS) && PATH=$(CURDIR)/$(VENV)/bin:$$PATH PYTHONPATH=$(CURDIR)/$(MUTANTS)/src \
		MUTANTS_ORIGINAL=$(CURDIR)/$(MUTANTS)/original cosmic-ray exec session.toml session.sqlite
	cd $(MUTANTS) && $(CURDIR)/$(PY) tests/mutants_summary.py session.sqlite $(CURDIR)/docs/reliability.md

lint: setup   # and the docs: a broken link or reference fails the build
	$(VENV)/bin/ruff check src tests bench wild_west run.py docs/hooks.py
	$(VENV)/bin/mypy
	$(PY) -m mkdocs build --strict --quiet --site-dir .cache/site-check

docs: setup   # the site in site/ (open site/index.html, or `mkdocs serve`); works offline
	$(PY) -m mkdocs build --strict

bench: setup   # `pip install lightning` first to include it in the comparisons
	$(PY) bench/epoch_overhead.py
	$(PY) bench/checkpoint_overhead.py
	$(PY) bench/whole_run.py
	$(PY) bench/scaling.py
	$(PY) bench/scale_out.py
	$(PY) bench/tokens_per_second.py

clean:
	rm -rf $(VENV) .cache build site src/*.egg-info
