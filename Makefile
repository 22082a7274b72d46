# IntentLab: `make lessons` runs the lessons, `make run` lessons and evidence, headless into runs/; `make lab` opens
# JupyterLab on working copies; `make test` runs the tests. Each creates .venv/ and installs what it needs on first
# use (Python 3.11, 3.12 or 3.13 and pip are all a machine needs).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# The Jupyter kernel that runs this .venv: registered for the user (VS Code, another JupyterLab, JupyterHub list
# it), with the variables below in its kernelspec so that a notebook runs the same wherever it is opened.
KERNEL         := intentlab
KERNEL_DISPLAY := IntentLab (.venv)
KERNEL_ENV     := PYTHONHASHSEED TOKENIZERS_PARALLELISM HF_HUB_OFFLINE TRANSFORMERS_OFFLINE
# On Linux, PyPI's torch is the CUDA build (several GB of nvidia-* wheels); PyTorch's own index serves the CPU build:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu      (on a fresh clone, or after rm -rf .venv)
# installs the pinned torch from there first; the rest then comes from PyPI as usual.
TORCH_INDEX ?=
export PYTHONHASHSEED := 0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# pip --no-compile: byte-compiling every installed module (torch's thousands of them) took 46 of the 75 s an install
# took here; Python compiles the modules a run imports on first import instead (about 10 s, once).

.PHONY: install kernel run lessons evidence test lab bench clean clean-cache site browser wheels-check

install: $(STAMP) kernel   ## .venv with the pinned packages, and the Jupyter kernel "IntentLab (.venv)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 13), "IntentLab needs Python 3.11, 3.12 or 3.13, found " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=23"
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet --no-compile --index-url $(TORCH_INDEX) "$$($(PY) -c 'import tomllib; print(next(d for d in tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"] if d.startswith("torch==")))')")
	$(PY) -m pip install --quiet --no-compile -e .
	$(PY) -m pip install --quiet --no-compile --no-deps $$($(PY) -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["tool"]["intentlab"]["no-deps"]))')
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e ".[test]"
	touch $(TEST_STAMP)

kernel: $(STAMP)     ## (re)register the user-level kernel "intentlab": it runs this checkout's .venv
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "$(KERNEL_DISPLAY)" \
	  $(foreach v,$(KERNEL_ENV),--env $(v) $($(v)))

run: install         ## every notebook, lessons and evidence (08 last), default parameters -> runs/
	$(PY) -m lib.run all

lessons: install     ## the lessons alone (notebooks/NN_*.ipynb) -> runs/
	$(PY) -m lib.run lessons

evidence: install    ## the evidence notebooks alone (notebooks/evidence/NN_*.ipynb) -> runs/evidence/
	$(PY) -m lib.run evidence

browser: $(STAMP)    ## Chromium for the browser tests: apt-get installs Debian's where it can (root on Debian); elsewhere it says how, and those tests skip
	$(PY) -m lib.browser

test: $(TEST_STAMP) kernel browser   ## unit tests + every notebook with smoke=True + the site and JupyterLab in Chromium
	$(PY) -m pytest -q

site: $(STAMP)       ## static HTML site of the executed notebooks in runs/ -> site/index.html
	$(PY) -m lib.site

wheels-check: $(STAMP)   ## every pin resolves to a wheel for Python 3.11, 3.12 and 3.13 (pip's dry run, installs nothing)
	$(PY) -m lib.wheelcheck

bench: $(STAMP)      ## SASRec speed and quality as one JSON line
	$(PY) -m lib.bench

# JupyterLab on working copies in lab/ (git-ignored), not on notebooks/: autosave writes outputs into the file it
# has open, and committed notebooks carry none. Copies keep the sources clean with nothing to install and no git
# set-up (an output-stripping git filter such as nbstripout would hide the outputs from git but leave them in the
# files, where the tests and the next `git pull` meet them). A copy is made once and then kept: your edits survive;
# delete lab/NN_*.ipynb to get a fresh copy of a notebook (`make lab` says which sources changed since).
LAB_ARGS ?=
lab: install         ## JupyterLab on working copies of the notebooks in lab/, with the "IntentLab (.venv)" kernel (LAB_ARGS: JupyterLab's flags)
	$(PY) -m lib.run --lab $(LAB_ARGS)

clean:               ## executed notebooks, the site and pytest's cache (not lab/: your copies, not data/cache)
	rm -rf runs/ site/ .pytest_cache

clean-cache:         ## data/cache: trained models, LLM passes, embeddings (rebuilt on the next run; needed after an edit that the cache key does not see)
	rm -rf data/cache/
