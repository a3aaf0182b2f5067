# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if it is missing.
PYTHON ?= python3
VENV := .venv
comma := ,
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo quickstart lint test test-slow test-browser test-beam test-torch bench docs clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,hub,jax]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) examples/dataset_bias.py

quickstart: install
	$(PY) examples/quickstart.py

lint: install
	$(PY) -m ruff check keras_gradcam tests benchmarks examples

# the default suite: everything but the slow checks (the docs site builds, full-size examples), in two
# processes (pytest-xdist; a module's tests stay in one, so its module fixtures, e.g. the JAX child, run once)
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadscope

test-slow: install
	$(PY) -m pytest -q -m slow

test-browser: install
	command -v chromium >/dev/null 2>&1 || { apt-get update && apt-get install -y chromium; }
	test -d runs/biased && test -f outputs/audit_biased/index.html || $(PY) examples/dataset_bias.py
	KG_BROWSER_LOGDIR=runs KG_AUDIT_REPORT=outputs/audit_biased/index.html KG_SAVE_SCREENSHOT=1 \
		$(PY) -m pytest -q -rs tests/test_browser.py tests/test_audit_browser.py

# Apache Beam (the [beam] extra, keras_gradcam.beam) in an environment of its own: it pins protobuf < 7 and
# pillow < 13, older than .venv's, and adds about 360 MB; make install leaves it out
BEAM_VENV ?= .venv-beam
$(BEAM_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BEAM_VENV)/bin/python || $(PYTHON) -m venv $(BEAM_VENV)
	$(BEAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BEAM_VENV)/bin/python -m pip install --quiet -e ".[test,beam]"
	touch $@

test-beam: $(BEAM_VENV)/.installed
	$(BEAM_VENV)/bin/python -m pytest -q tests/test_beam.py

# Keras on PyTorch (the [torch] extra) in an environment of its own: PyPI's Linux torch wheel brings
# its CUDA libraries (about 6 GB), too heavy for make install; the JAX checks run in make test
TORCH_VENV ?= .venv-torch
$(TORCH_VENV)/.installed: setup.cfg pyproject.toml
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TORCH_VENV)/bin/python -m pip install --quiet -e ".[test,torch,hub]"
	touch $@

test-torch: $(TORCH_VENV)/.installed
	KG_TEST_BACKENDS=torch $(TORCH_VENV)/bin/python -m pytest -q tests/test_backends.py

bench: install
	$(PY) benchmarks/bench_explainers.py
	$(PY) benchmarks/bench_callback.py
	$(PY) benchmarks/bench_scorecam.py
	$(PY) benchmarks/bench_dataset.py
	$(PY) benchmarks/bench_guided.py
	$(PY) benchmarks/bench_vit.py
	$(PY) benchmarks/bench_backends.py --backends tensorflow,jax$(if $(wildcard $(TORCH_VENV)/bin/python),$(comma)torch --torch-python $(TORCH_VENV)/bin/python)

docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) $(BEAM_VENV) $(TORCH_VENV) build *.egg-info .pytest_cache runs outputs site
