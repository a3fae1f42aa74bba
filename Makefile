# The one entry for humans and CI. Needs only python3 (>= 3.11), git and make.
PY ?= python3
UV_VERSION := 0.13.8
UV := .tools/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Installed packages get their bytecode at install time (as pip does), so a process start does not
# compile ~300 modules where the environment sets PYTHONDONTWRITEBYTECODE.
export UV_COMPILE_BYTECODE := 1

.PHONY: setup setup-runtime run test lint typecheck pytest soak bench mutate system-deps image clean

# Two environments in one .venv: `setup-runtime` (what `make run` needs: the project, the langgraph
# extra and the embedded redis-server) and `setup` (that plus the dev tools, for test, lint…). The
# runtime sync is --inexact, so `make run` after `make test` never uninstalls the test tools; the
# full sync is a superset, so it marks the runtime as synced too.
setup: $(VENV)/.synced
setup-runtime: $(VENV)/.synced-runtime

$(UV):
	$(PY) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --extra langgraph --python $(PY)
	$(BIN)/python -m compileall -q -j 0 shared services bench >/dev/null
	touch $@ $(VENV)/.synced-runtime

$(VENV)/.synced-runtime: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --inexact --no-dev --group embedded-redis --extra langgraph --python $(PY)
	$(BIN)/python -m compileall -q -j 0 shared services >/dev/null
	touch $@

system-deps:
	bash deploy/local/install-system-deps.sh

# tickertape:latest, with docker where a Docker engine answers, else podman; from python:3.11-slim,
# or a locally built Debian base where no registry is reachable (deploy/docker/build-image.sh).
image: system-deps
	bash deploy/docker/build-image.sh

run: setup-runtime
	$(BIN)/tickertape up

test: setup system-deps lint typecheck pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest

soak: setup
	$(BIN)/pytest -m slow --timeout 900

# Bytecode again first: a module edited since `make setup` would otherwise be compiled at every
# process start the bench times (the environment sets PYTHONDONTWRITEBYTECODE).
bench: setup
	$(BIN)/python -m compileall -q -j 0 shared services bench >/dev/null
	$(BIN)/python -m bench

# Mutation testing of the guarantee modules and the append scripts (not in make test: ~1 h on
# 2 cores). MUTATE=lua,reducer picks parts; see bench/mutate.py and docs/reliability.md.
mutate: setup
	$(BIN)/python -m bench.mutate $(if $(MUTATE),--only $(MUTATE))

clean:
	rm -rf $(VENV) .tools .state .pytest_cache .mypy_cache .ruff_cache
