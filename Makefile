# The two commands: `make serve` (run it) and `make test` (test it). Each first installs
# what is missing (system packages, the virtualenv, the package and its test extras);
# that is quick when nothing is. `make test-fast`: the tests that need no root, runsc or
# server (fake runtime, units, layer rules), in well under a minute.
PY ?= .venv/bin/python
STAMP := .venv/.sbx-installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export SBX_IMAGE_CACHE ?= /var/cache/sandbox-service/images

.PHONY: install system-deps serve test test-fast bench

install: system-deps $(STAMP)

system-deps:
	@$(SUDO) bash scripts/install-system-deps.sh

# the venv and the package, again whenever pyproject.toml changes
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip >/dev/null
	$(PY) -m pip install -q -e '.[test]'
	@bash scripts/fetch-sdk-wheels.sh $(PY)
	@touch $(STAMP)

serve: install
	.venv/bin/sbx serve

test: install
	$(PY) -m pytest -q -p no:cacheprovider -ra

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -ra -m fast

bench: install
	$(PY) benchmarks/bench_core.py
