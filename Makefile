# IntentLab: `make run` executes every notebook headless into runs/; `make test` runs the tests.
# Both create .venv/ and install everything on first use (Python 3.11, 3.12 or 3.13 and pip are all a machine needs).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install run test lab bench clean site browser wheels-check

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), "IntentLab needs Python 3.11, 3.12 or 3.13, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(PY) -m pip install --quiet -e .
	$(PY) -m pip install --quiet --no-deps $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["tool"]["intentlab"]["no-deps"]))')
	touch $(STAMP)

run: $(STAMP)        ## every notebook, default parameters -> runs/
	$(PY) -m lib.run

browser:             ## Debian's Chromium for the browser tests (installed when missing; no browser download)
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser   ## unit tests + every notebook with smoke=True + the site in Chromium
	$(PY) -m pytest -q

site: $(STAMP)       ## static HTML site of the executed notebooks in runs/ -> site/index.html
	$(PY) -m lib.site

wheels-check: $(STAMP)   ## every pin resolves to a wheel for Python 3.11, 3.12 and 3.13 (pip's dry run, installs nothing)
	$(PY) -m lib.wheelcheck

bench: $(STAMP)      ## SASRec speed and quality as one JSON line
	$(PY) -m lib.bench

lab: $(STAMP)        ## JupyterLab on the notebooks
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs/ site/ .pytest_cache
