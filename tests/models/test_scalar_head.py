"""The scalar head (the meta RM's and the BT RM's): reads the last real token whatever the padding; sharded ==
unsharded."""

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import models, parallel
from grm_jax.models.scalar_head import depth_states, head_scores, init_head_params, last_token_index, truncate


def _params(model, seed=0):
  """A non-zero head (the zero init scores everything 0, which would hide a wrong token pick)."""
  p = init_head_params(model.params, model.config.hidden_size)
  rng = np.random.default_rng(seed)
  p["head"] = {"kernel": jnp.asarray(rng.normal(size=model.config.hidden_size), jnp.float32),
               "bias": jnp.asarray(0.3, jnp.float32)}
  return p


def _rows(cfg, lengths, length=12, seed=0):
  rng = np.random.default_rng(seed)
  toks = [rng.integers(1, cfg.vocab_size, n).tolist() for n in lengths]
  right = np.zeros((len(lengths), length), np.int32)
  left = np.zeros_like(right)
  rmask = np.zeros(right.shape, bool)
  lmask = np.zeros(right.shape, bool)
  for i, t in enumerate(toks):
    right[i, : len(t)], rmask[i, : len(t)] = t, True
    left[i, length - len(t) :], lmask[i, length - len(t) :] = t, True
  return right, rmask, left, lmask


def test_zero_init_is_neutral():
  model = models.from_config(models.tiny("llama"))
  p = init_head_params(model.params, model.config.hidden_size)
  right, rmask, _, _ = _rows(model.config, [5, 9])
  np.testing.assert_array_equal(np.asarray(head_scores(model.config, p, right, rmask)), 0.0)
  assert p["head"]["kernel"].dtype == jnp.float32 and p["head"]["bias"].shape == ()


def test_last_real_token_right_and_left_padding():
  model = models.from_config(models.tiny("llama"))
  cfg, p = model.config, _params(model)
  right, rmask, left, lmask = _rows(cfg, [5, 12, 1, 8])
  np.testing.assert_array_equal(np.asarray(last_token_index(rmask)), [4, 11, 0, 7])
  np.testing.assert_array_equal(np.asarray(last_token_index(lmask)), [11, 11, 11, 11])
  a = np.asarray(head_scores(cfg, p, right, rmask))
  b = np.asarray(head_scores(cfg, p, left, lmask))
  np.testing.assert_allclose(a, b, atol=1e-5)
  # Unpadded row alone gives the same logit.
  one = np.asarray(head_scores(cfg, p, right[:1, :5], rmask[:1, :5]))
  np.testing.assert_allclose(one, a[:1], atol=1e-5)
  # Changing padding tokens changes nothing; changing the last real token does.
  noisy = np.where(rmask, right, 77)
  np.testing.assert_allclose(np.asarray(head_scores(cfg, p, noisy, rmask)), a, atol=1e-6)
  changed = right.copy()
  changed[0, 4] = (changed[0, 4] + 1) % cfg.vocab_size
  assert abs(float(head_scores(cfg, p, changed, rmask)[0]) - a[0]) > 1e-4


def test_sharded_equals_unsharded():
  assert jax.device_count() == 8, "conftest sets 8 fake CPU devices"
  cfg = models.tiny("llama")
  mesh = parallel.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
  plain = models.from_config(cfg, seed=1)
  with parallel.use_mesh(mesh, parallel.DEFAULT_RULES):
    sharded = models.from_config(cfg, seed=1)
  p0, p1 = _params(plain), _params(sharded)
  p1["head"] = init_head_params(sharded.params, cfg.hidden_size)["head"]  # replicated placement
  p1["head"] = jax.tree.map(lambda a, b: jax.device_put(b, a.sharding), p1["head"], p0["head"])
  assert p1["head"]["kernel"].sharding.is_fully_replicated
  assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(p1["decoder"]))
  right, rmask, _, _ = _rows(cfg, [5, 12, 1, 8, 3, 7, 12, 2])
  want = np.asarray(head_scores(cfg, p0, right, rmask))
  with sharded.scope():
    fn = jax.jit(lambda p, t, m: head_scores(cfg, p, t, m))
    got = fn(p1, parallel.shard_batch(right), parallel.shard_batch(rmask))
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_depth_states_are_what_each_truncated_model_reads():
  """Entry d-1 of `depth_states` is the head input of the decoder cut to d layers (sliding and global layers mixed,
  gemma2's sandwich norms), so a head fitted on it scores the same through `truncate` + `head_scores`."""
  model = models.from_config(models.tiny("gemma2"))
  cfg = model.config
  right, rmask, _, _ = _rows(cfg, [5, 12, 1, 8])
  states = np.asarray(depth_states(cfg, model.params, right, rmask))
  assert states.shape == (4, cfg.num_layers, cfg.hidden_size)
  kernel = np.random.default_rng(1).normal(size=cfg.hidden_size).astype(np.float32)
  for d in range(1, cfg.num_layers + 1):
    cut = truncate(model, d)
    assert cut.config.num_layers == d and len(cut.config.layer_windows()) == d
    p = init_head_params(cut.params, cfg.hidden_size)
    p["head"] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(0.5, jnp.float32)}
    np.testing.assert_allclose(np.asarray(head_scores(cut.config, p, right, rmask)), states[:, d - 1] @ kernel + 0.5,
                               rtol=1e-4, atol=1e-4)
  assert truncate(model, 0) is model and truncate(model, cfg.num_layers) is model
