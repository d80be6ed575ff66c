# specclass: the two commands a new user types (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## demo: build the dataset from the shipped sample, train, evaluate, report, predict
demo: $(STAMP)
	$(VENV)/bin/specclass demo --out demo-run

## test: the whole test suite (what CI runs)
test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo-run
