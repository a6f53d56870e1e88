# The template's two commands: `make demo` renders a service and runs it; `make test` runs every test.
SHELL := /bin/bash
DEST ?= demo-service
PYTEST_ARGS ?= -n 2

.PHONY: setup demo test test-full lint

# uv: the one on PATH, else a private copy under .tools/ (pipx's when pipx is there, else a venv of
# python3). Never `pip install` into the system Python: Debian and Ubuntu mark it externally managed.
TOOLS := $(CURDIR)/.tools
UV := $(or $(shell command -v uv 2>/dev/null),$(TOOLS)/bin/uv)
export PATH := $(dir $(UV)):$(PATH)

$(TOOLS)/bin/uv:
	@if command -v pipx >/dev/null; then \
		PIPX_HOME=$(TOOLS)/pipx PIPX_BIN_DIR=$(TOOLS)/bin pipx install --quiet uv; \
	else \
		{ python3 -m venv $(TOOLS)/venv || \
			{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && rm -rf $(TOOLS)/venv && apt-get update -qq && \
				DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv $(TOOLS)/venv; } || \
			{ echo "install pipx or python3-venv (Debian: apt-get install python3-venv), or uv itself"; exit 1; }; } && \
		$(TOOLS)/venv/bin/pip install --quiet uv && mkdir -p $(TOOLS)/bin && ln -sf ../venv/bin/uv $(TOOLS)/bin/uv && ln -sf ../venv/bin/uvx $(TOOLS)/bin/uvx; \
	fi

# Installs what the tests need on a fresh machine: uv (see above); from Debian, promtool and docker-compose,
# and chromium, node and npm for the rendered services' browser test (which skips without them).
setup: $(UV)
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v docker-compose >/dev/null || missing="$$missing docker-compose"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	command -v node >/dev/null && command -v npm >/dev/null || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "install:$$missing (Debian: apt-get install$$missing)"; exit 1; fi; \
	fi
	uv sync --quiet

demo: $(UV)
	uv tool run --from 'copier>=9.4,<10' copier copy --trust --defaults . $(DEST)
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
