# One entry point: `make book` builds the book, `make test` runs every check.
# Variables: PARAMS (a params file), VENV (the virtual environment), TORCH (the torch pins for
# this platform; the defaults come from this machine's local wheels: on aarch64 use
# TORCH="torch==2.9.1 torchvision==0.24.1").

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PARAMS ?= params/demo.yaml
TORCH ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
BOOK_OUT ?= .
JB_FLAGS := -W -n --keep-going

.DEFAULT_GOAL := help
.PHONY: help venv data train chapters chapters-from-store html book book-from-store browser lint test bench lab clean clean-all

help:
	@echo "make book            build the book with PARAMS=$(PARAMS) (venv, data, chapters, HTML)"
	@echo "make test            lint (ruff), then run the whole test suite (includes a smoke build of the book)"
	@echo "make lint            ruff check and ruff format --check"
	@echo "make chapter-01      execute one chapter with PARAMS into book/generated/"
	@echo "make data            generate / cache / split the data of PARAMS"
	@echo "make train           train every run the chapters need into the run store (runs/)"
	@echo "make html            render book/generated/ to HTML without executing anything"
	@echo "make book-from-store build the book from runs already in the store (never trains)"
	@echo "make bench           run the benchmarks (ratios measured in one run)"
	@echo "make lab             open the notebooks in JupyterLab"
	@echo "make clean           remove the built book and executed chapters (keeps data and runs)"

# uv installs the same pins about 3x as fast as pip (benchmarks/RESULTS.md). It reads no pip.conf, so
# it is handed pip's configured find-links and constraints (e.g. this machine's local torch wheels);
# where uv cannot be installed or fails, pip installs.
PIP_CONFIG = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p")
UV_FLAGS = $(eval UV_FLAGS := $(addprefix --find-links ,$(call PIP_CONFIG,find-links)) \
	$(addprefix --constraint ,$(call PIP_CONFIG,constraint)))$(UV_FLAGS)
install = { test -x $(BIN)/uv && $(BIN)/uv pip install --quiet --python $(BIN)/python $(UV_FLAGS) $(1); } \
	|| $(BIN)/python -m pip install --quiet $(1)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv || echo "uv is not available: pip installs"
	$(call install,$(TORCH))
	$(call install,-e ".[test]")
	@# torchattacks pins requests~=2.25 (clashes with Sphinx); it runs with a newer one.
	$(call install,--no-deps "torchattacks==3.5.1")
	@# quantus (the randomisation check's reference in a test) needs opencv-python, which clashes
	@# with the headless OpenCV; it runs with what the project installs.
	$(call install,--no-deps "quantus==0.6.0")
	@touch $@

venv: $(STAMP)

data: venv
	$(BIN)/fundus data $(PARAMS)

train: venv
	$(BIN)/fundus train $(PARAMS)

chapters: venv
	$(BIN)/fundus run all --params $(PARAMS)

chapters-from-store: venv
	$(BIN)/fundus run all --params $(PARAMS) --from-store

chapter-%: venv
	$(BIN)/fundus run $* --params $(PARAMS)

html: venv
	$(BIN)/jupyter-book build book --config $(CURDIR)/_config.yml --toc $(CURDIR)/_toc.yml --path-output $(BOOK_OUT) $(JB_FLAGS)
	@echo "The book is at $(abspath $(BOOK_OUT))/_build/html/index.html"

# make book times itself: install, data, each chapter (training, executing) and HTML go into
# book/generated/build_record.json and the store's history (the book's "How this book was built").
define timed_book
	@since=$$(date +%s.%N); $(MAKE) --no-print-directory venv && \
	$(BIN)/fundus build-record start $(PARAMS) --since $$since && \
	$(MAKE) --no-print-directory $(1) && since=$$(date +%s.%N) && \
	$(MAKE) --no-print-directory html && $(BIN)/fundus build-record finish --since $$since
endef

book:
	$(call timed_book,chapters)

book-from-store:
	$(call timed_book,chapters-from-store)

# The browser test opens the built book in headless Chromium: Debian's package, installed once.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; } || \
	  echo "could not install chromium: the browser test is skipped (and fails under CI)"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: venv browser lint
	$(BIN)/python -m pytest

bench: venv
	$(BIN)/python benchmarks/bench_cache.py
	$(BIN)/python benchmarks/bench_synthetic.py
	$(BIN)/python benchmarks/bench_training.py --params $(PARAMS) --report-sizes
	$(BIN)/python benchmarks/bench_side_by_side.py --params $(PARAMS)
	$(BIN)/python benchmarks/bench_adversarial.py --threads 1
	$(BIN)/python benchmarks/bench_corruptions.py
	$(BIN)/python benchmarks/bench_inference.py
	$(BIN)/python benchmarks/bench_attacks.py --threads 1

lab: venv
	$(BIN)/python -m pip install --quiet "jupyterlab>=4"
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf $(BOOK_OUT)/_build book/generated notebooks/*.ipynb

clean-all: clean
	rm -rf data runs
