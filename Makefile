# Developer and CI entry points. Every target is idempotent.
#
#   make deps-system   Debian packages for tests and bench (scripts/deps-system.sh lists them)
#   make .venv         virtualenv with the project and the example plugin, editable
#   make serve         run the appliance in the foreground with conf.d/ (from .venv-serve)
#   make check-config  validate conf.d/ (from .venv-serve)
#   make test          deps-system, the [test] extra and the fixture plugins, ruff + pytest
#   make bench         benchmark against Postfix (bench/README.md); BENCH_ARGS="--quick ..."
#   make package       the .deb, and the .rpm if rpmbuild is installed, in build/package
#   make fuzz          atheris on each harness in fuzz/ for FUZZ_SECONDS (60) each (docs/selftest.md)
#   make soak          30 minutes of mixed load, RSS and fds sampled (SOAK_SECONDS; docs/selftest.md)
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
# serve and check-config run from a virtualenv of their own that `make test` never
# touches: what an admin sees (plugins, check-config) has no test-only plugin in it.
SERVE_VENV := .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed-stamp
CONFIG_DIR ?= conf.d
BENCH_ARGS ?=
# The tests wait on peers and sockets more than on the CPU: four workers on two cores.
PYTEST_ARGS ?= -n 4

.PHONY: help deps-system $(VENV) serve tls check-config test bench package fuzz soak clean

help:
	@sed -n '3,12s/^# \{0,1\}//p' $(firstword $(MAKEFILE_LIST))

deps-system:
	@scripts/deps-system.sh  # the package list is in the script

$(VENV): $(VENV_STAMP)

$(VENV_PY) $(SERVE_PY): %/bin/python:
	$(PYTHON) -m venv $*

# The example plugin and the test-only fixture plugins are real distributions,
# installed the way an admin pip-installs a third-party plugin; the fixture plugins
# only into the test environment.
EXAMPLE_DIST := examples/sender-blocklist
FIXTURE_DIST := tests/fixture_plugins

$(VENV_STAMP) $(SERVE_STAMP): %/.installed-stamp: pyproject.toml $(EXAMPLE_DIST)/pyproject.toml \
        | %/bin/python
	$*/bin/python -m pip install --disable-pip-version-check -q -e . -e $(EXAMPLE_DIST)
	touch $@

# The [test] extra builds python-gssapi, which needs Debian packages (libkrb5-dev,
# gcc): installed after deps-system, so `make serve` needs neither.
$(TEST_STAMP): $(VENV_STAMP) $(FIXTURE_DIST)/pyproject.toml
	$(VENV_PY) -m pip install --disable-pip-version-check -q -e '.[test]' -e $(FIXTURE_DIST)
	touch $@

tls:
	@scripts/make-cert.sh var/tls

serve: $(SERVE_STAMP) tls
	mkdir -p var/spool
	exec $(SERVE_VENV)/bin/smtp-appliance serve --config-dir $(CONFIG_DIR)

check-config: $(SERVE_STAMP) tls
	$(SERVE_VENV)/bin/smtp-appliance check-config --config-dir $(CONFIG_DIR)

test: deps-system $(TEST_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV_PY) -m pytest -q $(PYTEST_ARGS)

bench: deps-system $(VENV_STAMP)
	$(VENV_PY) bench/run.py $(BENCH_ARGS)

PACKAGE_DIR ?= build/package

package:
	packaging/build.sh $(PACKAGE_DIR)

# Each harness reads fuzz/corpus/NAME (kept small in the repository) and writes what
# it finds to var/fuzz/NAME, crashes to var/fuzz/NAME-crash-*.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= engine milter policy config
FUZZ_STAMP := $(VENV)/.fuzz-installed-stamp

$(FUZZ_STAMP): $(TEST_STAMP)
	$(VENV_PY) -m pip install --disable-pip-version-check -q -e '.[fuzz]'
	touch $@

fuzz: $(FUZZ_STAMP)
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p var/fuzz/$$t; \
	  dict=; [ -f fuzz/$$t.dict ] && dict=-dict=fuzz/$$t.dict; \
	  $(VENV_PY) fuzz/fuzz_$$t.py -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 \
	    -print_final_stats=1 -artifact_prefix=var/fuzz/$$t- $$dict var/fuzz/$$t fuzz/corpus/$$t; \
	done

SOAK_SECONDS ?= 1800
soak: deps-system $(TEST_STAMP)
	$(VENV_PY) -m tests.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf var bench/results
