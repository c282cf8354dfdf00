"""The optimizer from config: Adam with moments stored in bf16 is Adam, at a third less state memory."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from grm_jax import configs
from grm_jax.train.optimizer import OptimConfig, make_optimizer, scale_by_adam_stored_as


def _run(tx, params, grads):
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def _problem(seed=0, steps=5):
  rng = np.random.default_rng(seed)
  params = {"w": jnp.asarray(rng.normal(size=(8, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.1, jnp.float32), params)
           for _ in range(steps)]
  return params, grads


def test_moments_stored_in_float32_are_optax_adam():
  params, grads = _problem()
  ours, _ = _run(scale_by_adam_stored_as(0.9, 0.95, 1e-8, jnp.float32), params, grads)
  ref, _ = _run(optax.scale_by_adam(0.9, 0.95, 1e-8), params, grads)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_moments_from_config_track_adamw_and_are_stored_in_bf16():
  group = configs.optim(1e-2)
  group.weight_decay, group.warmup_steps = 0.1, 0
  params, grads = _problem(1, steps=20)
  f32_tx, _ = make_optimizer(group, 20)
  group.moment_dtype = "bfloat16"
  bf16_tx, _ = make_optimizer(group, 20)
  want, _ = _run(f32_tx, params, grads)
  got, state = _run(bf16_tx, params, grads)
  adam = state[1][0]
  assert isinstance(adam, optax.ScaleByAdamState)
  assert {x.dtype for x in jax.tree.leaves((adam.mu, adam.nu))} == {jnp.dtype(jnp.bfloat16)}
  moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), want, params)
  err = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max(), got, want)
  for e, m in zip(jax.tree.leaves(err), jax.tree.leaves(moved), strict=True):
    assert e < 0.02 * m  # bf16 moments: the same trajectory within 2% of how far the params moved


def test_unknown_moment_dtype_names_the_key():
  group = configs.optim(1e-3)
  group.moment_dtype = "float16"
  with pytest.raises(ValueError, match="optim.moment_dtype='float16'"):
    make_optimizer(group, 10)


def test_training_settings_are_typed_and_checked_once_naming_the_key():
  from grm_jax.train.fit import FitConfig  # noqa: PLC0415

  group = configs.rft()
  fit = FitConfig.from_config(group, "rft")
  assert fit.batch_size == group.batch_size and fit.save_every == group.checkpoint.save_every
  assert fit.optim.learning_rate == group.optim.learning_rate and fit.optim.max_nonfinite_steps == 3
  group.epochs = 0
  with pytest.raises(ValueError, match=r"config rft\.epochs=0\.0: must be > 0"):
    FitConfig.from_config(group, "rft")
  optim = configs.optim(1e-3)
  optim.schedule = "linear"
  with pytest.raises(ValueError, match=r"config metarm\.optim\.schedule='linear'"):
    OptimConfig.from_config(optim, "metarm.optim")
  with pytest.raises(ValueError, match=r"config optim: missing key\(s\) \['b2'\]"):
    OptimConfig.from_config({k: v for k, v in configs.optim(1e-3).to_dict().items() if k != "b2"})
