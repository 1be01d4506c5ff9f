# Ki2API: every target installs what it needs first (a fresh clone needs only Python 3.11).
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Bytecode caches on, whatever the shell says: every gateway and CLI a test starts, and pytest's
# rewritten test modules, then compile once instead of on every start.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo run test check lint typecheck unit bench lock clean wheelhouse image

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/ki2api demo

run: install
	$(BIN)/ki2api serve

lint: install
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy
	# Windows too (start.bat / start.ps1): no POSIX-only module or call outside a platform check.
	$(BIN)/mypy --platform win32 --cache-dir .mypy_cache/win32

# Tests run in parallel (pytest-xdist): one test at a time per worker, `long` ones first.
WORKERS ?= 4
PARALLEL = -n $(WORKERS) --dist loadgroup

unit: install
	$(BIN)/pytest -q $(PARALLEL) tests/unit

# The inner loop: lint, types, the unit and component tiers.
check: lint typecheck
	$(BIN)/pytest -q $(PARALLEL) tests/unit tests/component

# Everything CI runs (.ci/run), with the 20 slowest tests named.
test: lint typecheck
	$(BIN)/pytest -q $(PARALLEL) --durations=20

bench: install
	$(BIN)/python -m bench.run

# Regenerate the lock from pyproject (run by a developer, never by CI).
lock:
	rm -rf /tmp/ki2api-lock && $(PYTHON) -m venv /tmp/ki2api-lock
	/tmp/ki2api-lock/bin/pip install --quiet setuptools wheel -e '.[dev]'
	/tmp/ki2api-lock/bin/pip freeze --all --exclude-editable | grep -v -e "^ki2api" -e "^pip==" > requirements.lock
	# redis needs it on Python < 3.11.3 (the container's Debian 3.11.2), which freeze cannot see
	echo "async-timeout==5.0.1" >> requirements.lock

# The container's wheelhouse: the locked runtime dependencies as wheels (the Dockerfile installs
# from it without network), then the image (deploy/README.md).
wheelhouse: deploy/container/wheels/.built

deploy/container/wheels/.built: requirements.lock pyproject.toml $(STAMP)
	rm -f deploy/container/wheels/*.whl
	$(BIN)/python -m pip wheel --quiet -c requirements.lock -w deploy/container/wheels setuptools wheel . \
		async-timeout  # redis' dependency on the image's Python 3.11.2 (< 3.11.3), not on ours
	rm -f deploy/container/wheels/ki2api-*.whl
	@touch $@

DOCKER ?= docker
image: wheelhouse
	$(DOCKER) build -t ki2api .

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
