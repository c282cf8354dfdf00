"""Decoder invariants that need no reference implementation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from grm_jax import models
from grm_jax.models import weights
from grm_jax.models.config import ModelConfig, UnsupportedModelError, from_hf_config, to_hf_config


def _loss(cfg, params, tokens):
  logits = models.Model(cfg, params).apply(params, tokens, jnp.arange(tokens.shape[1])[None], jnp.ones_like(tokens))[0]
  return jax.nn.log_softmax(logits)[..., :-1, :].mean()


def test_remat_gives_identical_gradients():
  cfg = models.tiny("gemma2")
  params = models.from_config(cfg, seed=0).params
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 12)))
  g1 = jax.grad(lambda p: _loss(cfg, p, tokens))(params)
  g2 = jax.grad(lambda p: _loss(cfg.replace(remat=True), p, tokens))(params)
  for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_tracks_float32():
  cfg = models.tiny("llama")
  m32 = models.from_config(cfg, seed=0)
  m16 = models.Model(
    cfg.replace(dtype="bfloat16", param_dtype="bfloat16"),
    jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), m32.params),
  )
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 10))
  a, b = np.asarray(models.logits(m32, tokens)), np.asarray(models.logits(m16, tokens))
  assert b.dtype == np.float32  # logits are always float32
  assert np.abs(a - b).max() < 0.05 * np.abs(a).max()


def test_param_tree_has_logical_names_everywhere():
  for family in ("llama", "qwen2", "gemma2"):
    shapes, names = weights.abstract_params(models.tiny(family))
    for shape, spec in zip(
      jax.tree_util.tree_leaves(shapes),
      jax.tree_util.tree_leaves(names, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec)),
      strict=True,
    ):
      assert len(spec) == len(shape.shape) and all(n is not None for n in spec), spec


def test_param_count_matches_config_formula():
  for family in ("llama", "qwen2", "gemma2"):
    cfg = models.tiny(family)
    shapes, _ = weights.abstract_params(cfg)
    assert sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes)) == cfg.num_params()


@pytest.mark.parametrize("name", ["smollm2-135m", "gemma2-2b", "gemma2-27b", "qwen2.5-1.5b", "llama3.2-1b"])
def test_presets_round_trip_through_hf_config(name):
  cfg = models.preset(name)
  assert from_hf_config(to_hf_config(cfg)) == cfg


def test_preset_sizes():
  assert abs(models.preset("smollm2-135m").num_params() / 1e6 - 134.5) < 1
  assert abs(models.preset("gemma2-27b").num_params() / 1e9 - 27.2) < 0.2


def test_bad_configs_name_the_field():
  with pytest.raises(UnsupportedModelError, match="family"):
    models.tiny("mixtral")
  with pytest.raises(ValueError, match="num_kv_heads"):
    models.tiny("llama", num_heads=4, num_kv_heads=3)
  with pytest.raises(ValueError, match="sliding_window"):
    ModelConfig(**{**models.tiny("gemma2").__dict__, "sliding_window": None})
  with pytest.raises(UnsupportedModelError, match="rope type 'yarn'"):
    from_hf_config(
      {
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": 8,
        "hidden_size": 8,
        "intermediate_size": 8,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "rope_scaling": {"rope_type": "yarn", "factor": 2.0},
      }
    )
  with pytest.raises(ValueError, match="'hidden_size' is missing"):
    from_hf_config({"architectures": ["LlamaForCausalLM"]}, source="x/config.json")
