# Two commands, each sets itself up from nothing: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch; a bare `torch` would pull several GB of CUDA packages.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-slow bench clean install install-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamp files make the install idempotent: re-run only when pyproject.toml changes.
$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(PY) -m contenv demo

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -m slow

clean:
	rm -rf $(VENV) build *.egg-info
