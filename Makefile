# Everything installs itself: `make test` and `make demo` work on a fresh machine.
PY := .venv/bin/python

.PHONY: install test lint demo bench docs clean

install:
	@bash scripts/install.sh

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

demo: install
	$(PY) scripts/demo.py

bench: install
	$(PY) bench/run.py

docs: install
	$(PY) scripts/update_readme.py

clean:
	rm -rf .venv .cache .demo test-artifacts .pytest_cache .ruff_cache *.egg-info
