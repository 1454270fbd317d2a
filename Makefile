# `make test` and `make train` work on a fresh clone: the venv is created on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test train venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest parity_tests

# The default job: a small Swin on scikit-learn's digits (CPU), outputs in runs/digits/ (replaced on a
# rerun, unless ARGS has --resume).
train: $(STAMP)
	$(PY) -m train --preset digits $(if $(findstring --resume,$(ARGS)),,--overwrite) $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
