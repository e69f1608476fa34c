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

# Teacher, baseline, distilled student, TFLite export, latency, runs/demo/report.md. Finished stages are
# reused (an interrupted run resumes); `$(BIN)/skd-tf demo --fresh` starts over.
demo: $(STAMP)
	$(BIN)/skd-tf demo

clean:
	rm -rf $(VENV) runs
