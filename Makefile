# magphase: idempotent set-up and entry points. `make test` and `make demo` work on a fresh clone.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch is pinned and installed first: a later unpinned resolve would otherwise pull a multi-GB CUDA build.
TORCH_PIN := $(shell grep -E '^torch==' requirements.lock)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install test test-fast demo bench lint clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_PIN)"
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import torch, magphase; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

demo: install
	$(BIN)/magphase run configs/demo.yaml --out runs/demo

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
