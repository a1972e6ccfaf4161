# Myelin: `make run` starts a homeserver on localhost, `make test` runs the suite.

PYTHON ?= python3.11
VENV   ?= .venv
DATA   ?= data
CONFIG ?= $(DATA)/homeserver.yaml
SERVER_NAME ?= localhost

BIN := $(VENV)/bin

.PHONY: run test venv install install-test js-deps lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

venv: $(BIN)/python
install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(CONFIG): | $(VENV)/.installed
	$(BIN)/myelin generate-config --server-name $(SERVER_NAME) --config-path $(CONFIG) \
		--data-dir $(DATA)

run: $(VENV)/.installed $(CONFIG)
	$(BIN)/myelin run -c $(CONFIG)

# The JS client tests (matrix-js-sdk) need their npm dependencies.
js-deps:
	@if [ -f tests/js/package.json ]; then \
		if [ -f tests/js/package-lock.json ]; then \
			npm ci --prefix tests/js --no-audit --no-fund; \
		else \
			npm install --prefix tests/js --no-audit --no-fund; \
		fi; \
	fi

# pytest exits 5 when it collects no tests; that is a failure here too.
# Tests run in TEST_JOBS processes (pytest-xdist), a whole file per process so
# a module's shared servers (federation pairs, fleets) start once.
TEST_JOBS ?= auto
test: $(VENV)/.installed-test js-deps
	$(BIN)/pytest -q -n $(TEST_JOBS) --dist loadfile

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) src/*.egg-info
