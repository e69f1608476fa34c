# skd-tf: `make demo` runs the main job, `make test` the test suite. Both create .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

# Finished stages are not redone: each run resumes from (or reuses) its state in runs/.
demo: $(STAMP)
	$(BIN)/skd-tf train --config configs/synthetic_teacher.yaml
	$(BIN)/skd-tf train --config configs/synthetic_student.yaml
	$(BIN)/skd-tf distill --config configs/synthetic_skd_full.yaml

clean:
	rm -rf $(VENV) runs
