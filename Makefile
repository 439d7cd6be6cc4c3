# The book's two commands:  make book [SMOKE=1]  and  make test.  Both set up .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SMOKE  ?= 0

.PHONY: book test lab clean site

# (Re)create the virtual environment when it is missing or the pins have changed.
$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	@touch $(STAMP)

book: $(STAMP)
	$(PY) tools/run_book.py $(if $(filter 1,$(SMOKE)),--smoke,)

# Unit tests and the smoke run of every notebook (checked against the committed outputs where marked).
# Smoke runs write their results and models under build/, never over results/. The 25 slowest tests are listed last.
test: $(STAMP)
	BOOK_SMOKE=1 BOOK_RESULTS_DIR=$(CURDIR)/build/test-results BOOK_MODELS_DIR=$(CURDIR)/build/test-models \
	$(PY) -m pytest tests -p no:cacheprovider --durations=25

# The book as a website, from the committed executed notebooks (nothing is run): build/site/html/index.html.
# tests/test_site.py (part of make test) builds it too and reads every page in headless Chromium.
site: $(STAMP)
	$(PY) tools/build_site.py

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf build

# Measure what the book reports (smoke time of every chapter, CPU latency float vs int8,
# input-pipeline throughput) into results/bench.json. About 15 minutes on 2 cores; no test asserts a time.
.PHONY: bench
bench: $(STAMP)
	$(PY) tools/bench.py
