# Two commands do all set-up on a fresh machine:
#   make demo   installs STAR into .venv and runs the main job on the embedded default
#   make test   installs STAR into .venv and runs lint, the dependency contracts and the tests
# (.ci/run calls `make test`.)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= results
export JAX_PLATFORMS ?= cpu

.PHONY: install demo test lint proto

$(BIN)/star: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/star

install: $(BIN)/star

demo: install
	$(BIN)/star nqm figures --out $(OUT)/nqm

# Regenerate services/generated/ from proto/ (never edit the generated files by hand).
proto: install
	$(BIN)/python scripts/gen_proto.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
