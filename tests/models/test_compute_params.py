"""Params as the decoder reads them (`weights.for_compute`): GRPO's bf16 reference and the sampler's layout change
no number, only bytes."""

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import configs, models, parallel
from grm_jax.models import weights
from grm_jax.models.config import tiny
from grm_jax.sampling.generate import sampling_shardings
from grm_jax.train.grpo import GrpoConfig, reference_params
from grm_jax.train.logprobs import token_logprobs


def test_compute_dtype_weights_give_the_same_logprobs():
  cfg = tiny("gemma2", dtype="bfloat16", param_dtype="float32")
  model = models.from_config(cfg)
  cast = weights.for_compute(cfg, model.params)
  assert cast["layers"]["mlp"]["up"].dtype == jnp.bfloat16 and cast["embed"].dtype == jnp.bfloat16
  assert cast["final_norm"]["scale"].dtype == jnp.float32  # read in float32: kept
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24)), jnp.int32)
  mask = jnp.ones(tokens.shape, bool)
  a = token_logprobs(cfg, model.params, tokens, mask)[0]
  b = token_logprobs(cfg, cast, tokens, mask)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def grpo_config(**kw):
  return GrpoConfig.from_config({**configs.grpo().to_dict(), **kw})


def test_reference_is_absent_at_beta_zero_and_owns_its_buffers():
  cfg = tiny("llama")  # f32 compute: the reference is a plain copy
  with parallel.use_mesh(parallel.make_mesh({"fsdp": 4, "tensor": 2})):
    model = models.from_config(cfg)
  assert reference_params(cfg, model.params, grpo_config(beta=0.0)) is None
  ref = reference_params(cfg, model.params, grpo_config(beta=0.08))
  for p, r in zip(jax.tree.leaves(model.params), jax.tree.leaves(ref), strict=True):
    assert r is not p and r.sharding.is_equivalent_to(p.sharding, p.ndim)
    np.testing.assert_array_equal(np.asarray(p), np.asarray(r))


def test_sampler_keeps_weights_whole_over_fsdp_and_split_over_tensor():
  cfg = tiny("llama")
  with parallel.use_mesh(parallel.make_mesh({"fsdp": 4, "tensor": 2}), parallel.DEFAULT_RULES):
    shardings = sampling_shardings(cfg)
    train = weights.param_shardings(cfg)["layers"]["attn"]["q"].spec
  q = shardings["layers"]["attn"]["q"].spec  # [layers, embed, heads, head_dim]
  assert "fsdp" not in jax.tree.leaves(tuple(q)) and "tensor" in jax.tree.leaves(tuple(q))
  assert "fsdp" in jax.tree.leaves(tuple(train))


def test_reference_on_host_gives_the_same_log_probs_from_host_memory():
  cfg = tiny("llama")
  with parallel.use_mesh(parallel.make_mesh({"fsdp": 4, "tensor": 2})):
    model = models.from_config(cfg)
  ref = reference_params(cfg, model.params, grpo_config(beta=0.08, reference_on_host=True))
  assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(ref.arrays))
  back = ref.on_device()
  for p, r in zip(jax.tree.leaves(model.params), jax.tree.leaves(back), strict=True):
    assert r.sharding.is_equivalent_to(p.sharding, p.ndim)
    np.testing.assert_array_equal(np.asarray(p), np.asarray(r))
