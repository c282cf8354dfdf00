"""Models: config, the Flax decoder, checkpoint loading (HF safetensors, GGUF, built-ins), export."""

from grm_jax.models.config import (
  ModelConfig,
  RopeScaling,
  UnsupportedModelError,
  from_hf_config,
  preset,
  tiny,
  to_hf_config,
)
from grm_jax.models.decoder import Decoder, KVCache, default_positions, init_cache
from grm_jax.models.model import Model, from_config, load, logits, save_pretrained

__all__ = [
  "Decoder",
  "KVCache",
  "Model",
  "ModelConfig",
  "RopeScaling",
  "UnsupportedModelError",
  "default_positions",
  "from_config",
  "from_hf_config",
  "init_cache",
  "load",
  "logits",
  "preset",
  "save_pretrained",
  "tiny",
  "to_hf_config",
]
