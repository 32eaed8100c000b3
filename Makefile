# The course's two front-door commands: `make course` and `make test`.
# Both set up .venv on first use (about 2 minutes from the package cache), then do their job.

SHELL        := /bin/bash
PYTHON       ?= python3
VENV         ?= .venv
PY           := $(VENV)/bin/python
STAMP        := $(VENV)/.sdedu-installed
# JupyterLab refuses to run as root (CI, containers, classroom servers) unless told so.
ROOT_FLAG    := $(if $(filter 0,$(shell id -u)),--allow-root,)
# Two test workers, one thread each: two torch processes that each use every core run ~100x slower.
TEST_WORKERS ?= 2
# Course notebooks run in tests/test_book.py, which builds the book (docs/BOOK.md) with every one executed and a
# cell error failing the build: what nbval --nbval-lax checked, plus the site. Solution notebooks run under nbval.
# Exercise notebooks run in tests/test_exercises_notebooks.py, which proves more than nbval can: each runs to the
# end and only its check cells fail, with ExerciseIncomplete.
NBVAL_NOTEBOOKS := $(wildcard solutions/*.ipynb)
ALL_NOTEBOOKS   := $(wildcard notebooks/*.ipynb solutions/*.ipynb exercises/*.ipynb)

.PHONY: help setup browser course workspace lint test test-lib strip exercises bench book book-clean wheel

help:
	@echo "make course     set up if needed, copy new exercises into workspace/, then open the course in JupyterLab"
	@echo "make workspace  copy exercises that workspace/ lacks into it (never overwrites your work)"
	@echo "make test       set up if needed, then lint and run every test and every notebook (quick mode)"
	@echo "make lint       ruff (lint + format check) and import-linter (the layers of docs/DESIGN.md)"
	@echo "make test-lib   only the library tests (fast)"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make strip      strip outputs from every notebook before committing"
	@echo "make bench      python -m sdedu.bench"
	@echo "make wheel      build dist/sdedu-*.whl, the package a learner installs (library, weights, course)"
	@echo "make book       the course as a static site in build/book/ (every notebook executed, full mode; docs/BOOK.md)"

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The course's JupyterLab configuration is jupyter/ (added to Jupyter's config path, the learner's own config
# still applies): the server's root is this repository, the browser opens notebook 00, and nothing asks the
# internet for news, updates or extensions.
COURSE_ENV := JUPYTER_CONFIG_PATH="$(CURDIR)/jupyter$(if $(JUPYTER_CONFIG_PATH),:$(JUPYTER_CONFIG_PATH))"
# A browser opens where there is a screen; elsewhere (Linux without a display) JupyterLab prints the URL.
NO_BROWSER   := $(if $(or $(DISPLAY),$(WAYLAND_DISPLAY),$(filter Darwin,$(shell uname -s))),,--no-browser)

course: workspace
	@echo "Opening the course at notebooks/00_start_here.ipynb; your exercises are in workspace/."
	@echo "On a machine without a screen, open the http://127.0.0.1:8888/lab/tree/notebooks/00_start_here.ipynb?token=... URL printed below."
	$(COURSE_ENV) $(VENV)/bin/jupyter lab --ip=127.0.0.1 $(ROOT_FLAG) $(NO_BROWSER)

# Your answers live in workspace/ (git-ignored): exercises are copied there once, an existing copy is never touched,
# so `make exercises` (which rewrites exercises/) and `git pull` cannot overwrite your work.
workspace: setup
	$(PY) -m sdedu.workspace --exercises exercises --workspace workspace

# The browser test drives Debian's Chromium; install it where we may (root + apt-get, as in CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed: the browser test will be skipped"; \
	  else echo "chromium is missing and cannot be installed here: the browser test will be skipped"; fi; }

lint: setup
	$(VENV)/bin/ruff check sdedu tests
	$(VENV)/bin/ruff format --check sdedu tests
	$(VENV)/bin/lint-imports

# Style and architecture are checked by tools first (seconds), then every test and notebook.
# --no-loadscope-reorder: test files go to the workers in collection order (xdist would sort them by test count),
# so tests/test_book.py, ~11 worker-minutes of notebooks, starts at once instead of running alone at the end.
test: lint browser
	SDEDU_QUICK=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --nbval-lax --nbval-cell-timeout=900 \
		--durations=15 tests $(NBVAL_NOTEBOOKS)

test-lib: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) tests

exercises: setup
	$(PY) -m sdedu.grading build

strip: setup
	$(VENV)/bin/jupyter nbconvert --clear-output --inplace $(ALL_NOTEBOOKS)

bench: setup
	$(PY) -m sdedu.bench

# The wheel (and sdist) a learner installs: `pip install dist/sdedu-*.whl`, then `sdedu course`. --no-isolation: the
# build backend (setuptools) comes from .venv instead of being downloaded into a throw-away environment, so the
# build works offline.
wheel: setup
	$(PY) -m build --no-isolation --outdir dist .

# The course as a static site (docs/BOOK.md): Sphinx + myst-nb, offline. Full mode unless SDEDU_QUICK=1 is given;
# executed outputs are cached in build/book-cache/, so a rebuild re-runs only the notebooks whose code changed.
book: setup
	SDEDU_QUICK=$(SDEDU_QUICK) $(PY) -m sphinx -b html -c book . build/book
	@echo "The book: build/book/index.html"

book-clean:
	rm -rf build/book build/book-cache
