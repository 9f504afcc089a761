# Developer and CI entry points. Every target is idempotent.
#
#   make deps-system   Debian packages for tests and bench (scripts/deps-system.sh lists them)
#   make .venv         virtualenv with the project and the example plugins, editable
#   make serve         run the appliance in the foreground with conf.d/
#   make check-config  validate conf.d/
#   make test          deps-system, the [test] extra, ruff + pytest
#   make bench         benchmark against Postfix (bench/README.md); BENCH_ARGS="--quick ..."
#   make clean         remove var/ and bench/results/ (keeps .venv)

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
# Written after a successful install; older than pyproject.toml means "reinstall".
VENV_STAMP := $(VENV)/.installed-stamp
TEST_STAMP := $(VENV)/.test-installed-stamp
CONFIG_DIR ?= conf.d
BENCH_ARGS ?=

.PHONY: help deps-system $(VENV) serve tls check-config test bench clean

help:
	@sed -n '3,9s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

deps-system:
	@scripts/deps-system.sh  # the package list is in the script

$(VENV): $(VENV_STAMP)

$(VENV_PY):
	$(PYTHON) -m venv $(VENV)

# The example plugin and the test-only fixture plugins are real distributions,
# installed the way an admin pip-installs a third-party plugin.
PLUGIN_DISTS := examples/sender-blocklist tests/fixture_plugins

$(VENV_STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(PLUGIN_DISTS)) | $(VENV_PY)
	$(VENV_PY) -m pip install --disable-pip-version-check -q -e . \
	    $(addprefix -e ,$(PLUGIN_DISTS))
	touch $@

# The [test] extra builds python-gssapi, which needs Debian packages (libkrb5-dev,
# gcc): installed after deps-system, so `make serve` needs neither.
$(TEST_STAMP): $(VENV_STAMP)
	$(VENV_PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

tls:
	@scripts/make-cert.sh var/tls

serve: $(VENV_STAMP) tls
	mkdir -p var/spool
	exec $(VENV)/bin/smtp-appliance serve --config-dir $(CONFIG_DIR)

check-config: $(VENV_STAMP) tls
	$(VENV)/bin/smtp-appliance check-config --config-dir $(CONFIG_DIR)

test: deps-system $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV_PY) -m pytest -q

bench: deps-system $(VENV_STAMP)
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

clean:
	rm -rf var bench/results
