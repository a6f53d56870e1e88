# The template's two commands: `make demo` renders a service and runs it; `make test` runs every test.
SHELL := /bin/bash
DEST ?= demo-service
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test test-full lint

# Installs what the tests need on a fresh machine: uv (PyPI), promtool and docker-compose (Debian).
setup:
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
	@if ! command -v promtool >/dev/null || ! command -v docker-compose >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus docker-compose >/dev/null; \
		else echo "install promtool and docker-compose (Debian: apt-get install prometheus docker-compose)"; exit 1; fi; \
	fi
	uv sync --quiet

demo:
	@command -v uv >/dev/null || python3 -m pip install --quiet uv
	uvx --from 'copier>=9.4,<10' copier copy --trust --defaults . $(DEST)
	$(MAKE) -C $(DEST) run

# Every combination: render, ruff, mypy, workflow schema, the fast tier; the heavy tier on a pairwise
# cover plus the default and richest answers; the update, newcomer and validator tests.
test: setup
	uv run ruff check tests hooks
	uv run mypy
	uv run pytest $(PYTEST_ARGS)

# Every tier on every combination (the template's sharded CI runs this with TEMPLATE_TEST_SHARD=k/n).
test-full: setup
	uv run ruff check tests hooks
	uv run mypy
	TEMPLATE_TEST_FULL=1 uv run pytest $(PYTEST_ARGS)

lint: setup
	uv run ruff check tests hooks
	uv run ruff format --check tests hooks
	uv run mypy
