# skd-tf: `make demo` runs the main job, `make test` the test suite, `make docs` the documentation site.
# Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Bytecode: pip's compilation of every installed module (~15,000, mostly TensorFlow's and torch's, few ever
# imported) made `pip install` take 85 s instead of 40–48 s on 2 AVX2 cores. It is skipped; a module is compiled
# when first imported, into the venv's own cache that every later process reads. PYTHONDONTWRITEBYTECODE (set on
# some machines) would make each process compile TensorFlow's modules again: 14 s per import instead of 6.5.
export PYTHONPYCACHEPREFIX := $(abspath $(VENV))/pycache
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test docs install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers: most of a test's time is single-threaded Python (tracing, graph building), so two
# share the two cores of the CI machine well; each replica-gradient report's tests stay on one worker.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 tests

# Teacher, baseline, distilled student, TFLite export, latency, runs/demo/report.md. Finished stages are
# reused (an interrupted run resumes); `$(BIN)/skd-tf demo --fresh` starts over.
demo: $(STAMP)
	$(BIN)/skd-tf demo

# The documentation site (docs/ + the API reference from the docstrings) into site/; `make test` builds it
# strictly too. Browse it with `$(BIN)/mkdocs serve`.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
