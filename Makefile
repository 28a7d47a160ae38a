# Two commands matter: `make demo` and `make test`.  Both set everything up on a
# fresh Debian/Ubuntu machine (as root, or with sudo): Debian's tarantool, a
# Python virtual environment with the package and its test extra.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q
CLUSTER := $(PY) test-cluster/cluster.py

.PHONY: test demo deps system-deps venv cluster-up cluster-down lint clean

test: deps bench-venv
	@status=0; $(PY) -m pytest $(PYTEST_ARGS) || status=$$?; \
	$(CLUSTER) down --all >/dev/null 2>&1; \
	exit $$status

demo: deps
	@status=0; $(CLUSTER) up --fixed-ports && $(PY) examples/demo.py || status=$$?; \
	$(CLUSTER) down; \
	exit $$status

deps: system-deps venv

# Installs only what is missing; `apt-get update` runs once, first, when anything is.
system-deps:
	@missing=""; \
	command -v tarantool >/dev/null 2>&1 || missing="$$missing tarantool"; \
	command -v stunnel4 >/dev/null 2>&1 || command -v stunnel >/dev/null 2>&1 || missing="$$missing stunnel4"; \
	command -v $(PYTHON) >/dev/null 2>&1 || missing="$$missing python3"; \
	$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && $(APT_INSTALL) $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg setup.py Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test,prometheus]'
	@touch $@

# Benchmark against tarantool-python and asynctnt (bench/README.md): its own venv
# bench/.venv; `bench` writes bench/RESULTS.md + chart, `bench-quick` bench/quick/.
.PHONY: bench bench-quick bench-venv
bench: system-deps
	$(PYTHON) bench/run.py $(BENCH_ARGS)

bench-quick: system-deps
	$(PYTHON) bench/run.py --quick $(BENCH_ARGS)

# The benchmark's own venv with the pinned peers (tarantool-python, asynctnt): `make test`
# needs it so that the harness test runs one cell of every client, peers included.
bench-venv: system-deps
	@$(PYTHON) bench/run.py --setup

# The documentation site (docs/conf.py): its own venv docs/.venv with the package and
# its docs extra (Sphinx, MyST); HTML in docs/_build/html.  -W --keep-going -n: every
# warning and every unresolved cross-reference fails the build, all of them reported.
DOCS_VENV ?= docs/.venv
SPHINXOPTS ?= -W --keep-going -n
.PHONY: docs
docs: $(DOCS_VENV)/.installed
	$(DOCS_VENV)/bin/python -m sphinx -b html -E $(SPHINXOPTS) docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

$(DOCS_VENV)/.installed: setup.cfg setup.py Makefile
	@$(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1 || \
		{ $(SUDO) apt-get update -q && $(APT_INSTALL) python3-venv; }
	$(PYTHON) -m venv $(DOCS_VENV)
	$(DOCS_VENV)/bin/python -m pip install -q -e '.[docs,prometheus]'
	@touch $@

# Chaos under load, the long run (docs/reliability.md): its own replica set, 150 s of
# faults; writes its figures in docs/reliability.md. CHAOS_ARGS="--seed N" replays one.
.PHONY: chaos
chaos: deps
	$(PY) tests/chaos.py --seconds 150 --record docs/reliability.md $(CHAOS_ARGS)

cluster-up: deps
	$(CLUSTER) up --fixed-ports

cluster-down:
	$(CLUSTER) down --all

lint: deps
	$(PY) -m pip install -q mypy==2.4.1 ruff==0.17.6
	$(PY) -m mypy tarantool_pool
	$(PY) -m ruff check tarantool_pool

clean:
	-$(CLUSTER) down --all
	rm -rf $(VENV) build dist *.egg-info test-cluster/.run docs/_build $(DOCS_VENV)
