# The two commands: `make serve` (run it) and `make test` (test it). `make install` first.
PY ?= .venv/bin/python
export SBX_IMAGE_CACHE ?= /var/cache/sandbox-service/images

.PHONY: install serve test bench

install:
	sudo bash scripts/install-system-deps.sh 2>/dev/null || bash scripts/install-system-deps.sh
	python3 -m venv .venv
	$(PY) -m pip install -q -e '.[test]'

serve:
	.venv/bin/sbx serve

test:
	$(PY) -m pytest -q -p no:cacheprovider -ra

bench:
	$(PY) benchmarks/bench_core.py
