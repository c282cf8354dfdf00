"""The Flax Linen decoder: Llama / Qwen2 / Gemma-2 from one `ModelConfig`.

Layers are stacked with `nn.scan` (one compiled block, params with a leading `layers` axis),
which keeps compile time flat in depth and lets the KV cache be one array per K and V.

The KV cache is explicit data, passed in and returned (`KVCache`):
  k, v   [layers, batch, slots, kv_heads, head_dim]
  valid  [batch, slots]  which slots hold a real (non-padding) token
  index  int32 scalar    the next slot to write
All rows write the same slots (prompts are left-padded), so attention masks come from slot
indices: a query in slot q sees key slot s when s <= q, s is valid, and q - s < window.
Contiguous slots mean slot distance equals position distance for real tokens, which is what
Gemma-2's sliding window measures.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import parallel
from grm_jax.models.config import ModelConfig

Array = jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  k: Array
  v: Array
  valid: Array
  index: Array

  @property
  def num_slots(self) -> int:
    return self.k.shape[2]


def init_cache(cfg: ModelConfig, batch: int, slots: int, dtype: Any = None) -> KVCache:
  """An empty cache with room for `slots` tokens per row (prompt + new tokens)."""
  shape = (cfg.num_layers, batch, slots, cfg.num_kv_heads, cfg.head_dim)
  dt = jnp.dtype(dtype or cfg.dtype)
  return KVCache(
    k=jnp.zeros(shape, dt),
    v=jnp.zeros(shape, dt),
    valid=jnp.zeros((batch, slots), bool),
    index=jnp.zeros((), jnp.int32),
  )


_constrain = parallel.constrain


def _param(module, name, init, shape, names, dtype):
  return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    init = nn.initializers.zeros if cfg.norm_plus_one else nn.initializers.ones
    w = _param(self, "scale", init, (x.shape[-1],), ("norm",), jnp.dtype(cfg.param_dtype))
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.rms_norm_eps)
    w32 = w.astype(jnp.float32)
    if cfg.norm_plus_one:
      w32 = 1.0 + w32
    return (y * w32).astype(cfg.dtype)


def apply_rope(x: Array, positions: Array, inv_freq: np.ndarray) -> Array:
  """Rotate-half RoPE (the transformers convention). x [B,T,H,D], positions [B,T]."""
  freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]  # [B,T,D/2]
  cos = jnp.cos(freqs)[:, :, None, :]
  sin = jnp.sin(freqs)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


def _softcap(x, cap):
  return x if cap is None else jnp.tanh(x / cap) * cap


class Attention(nn.Module):
  cfg: ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(self, x, positions, window, kv_state, q_slots, k_slots, k_valid):
    """x [B,T,D]; kv_state None (no cache) or (k_cache, v_cache, index) for this layer."""
    cfg = self.cfg
    pdt, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    d, h, kvh, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nn.initializers.normal(0.02)
    wq = _param(self, "q", init, (d, h, hd), ("embed", "q_heads", "head_dim"), pdt)
    wk = _param(self, "k", init, (d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt)
    wv = _param(self, "v", init, (d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt)
    wo = _param(self, "o", init, (h, hd, d), ("q_heads", "head_dim", "embed"), pdt)
    q = jnp.einsum("btd,dhk->bthk", x, wq.astype(dt))
    k = jnp.einsum("btd,dhk->bthk", x, wk.astype(dt))
    v = jnp.einsum("btd,dhk->bthk", x, wv.astype(dt))
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", zeros, (h, hd), ("q_heads", "head_dim"), pdt).astype(dt)
      k = k + _param(self, "k_bias", zeros, (kvh, hd), ("kv_heads", "head_dim"), pdt).astype(dt)
      v = v + _param(self, "v_bias", zeros, (kvh, hd), ("kv_heads", "head_dim"), pdt).astype(dt)
    heads = ("activation_batch", "activation_length", "activation_heads", None)
    q = _constrain(apply_rope(q, positions, cfg.rope_inv_freq()), heads, self.mesh, self.rules)
    k = _constrain(apply_rope(k, positions, cfg.rope_inv_freq()), heads, self.mesh, self.rules)
    v = _constrain(v, heads, self.mesh, self.rules)

    new_kv = None
    if kv_state is not None:
      k_cache, v_cache, index = kv_state
      k_cache = jax.lax.dynamic_update_slice(k_cache, k.astype(k_cache.dtype), (0, index, 0, 0))
      v_cache = jax.lax.dynamic_update_slice(v_cache, v.astype(v_cache.dtype), (0, index, 0, 0))
      new_kv = (k_cache, v_cache)
      k, v = k_cache.astype(dt), v_cache.astype(dt)

    b, t = x.shape[:2]
    g = h // kvh
    qg = q.reshape(b, t, kvh, g, hd)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
    scores = _softcap(scores * cfg.attn_scale, cfg.attn_logit_softcap)
    rel = q_slots[:, None] - k_slots[None, :]  # [T, S]
    allowed = (rel >= 0) & (rel < window)
    mask = allowed[None, :, :] & k_valid[:, None, :]  # [B, T, S]
    scores = jnp.where(mask[:, None, None, :, :], scores, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, h, hd)
    y = jnp.einsum("bthk,hkd->btd", out, wo.astype(dt))
    return y, new_kv


class MLP(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x):
    cfg = self.cfg
    pdt, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    d, f = cfg.hidden_size, cfg.intermediate_size
    init = nn.initializers.normal(0.02)
    gate = _param(self, "gate", init, (d, f), ("embed", "mlp"), pdt)
    up = _param(self, "up", init, (d, f), ("embed", "mlp"), pdt)
    down = _param(self, "down", init, (f, d), ("mlp", "embed"), pdt)
    a = x @ gate.astype(dt)
    a = jax.nn.silu(a) if cfg.mlp_activation == "silu" else jax.nn.gelu(a, approximate=True)
    return (a * (x @ up.astype(dt))) @ down.astype(dt)


class Block(nn.Module):
  """One pre-norm transformer block; the scan body (carry = hidden states)."""

  cfg: ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(self, x, window, layer_kv, positions, index, q_slots, k_slots, k_valid):
    cfg = self.cfg
    kv_state = None if layer_kv is None else (layer_kv[0], layer_kv[1], index)
    h = RMSNorm(cfg, name="attn_norm")(x)
    h, new_kv = Attention(cfg, self.mesh, self.rules, name="attn")(
      h, positions, window, kv_state, q_slots, k_slots, k_valid
    )
    if cfg.sandwich_norms:
      h = RMSNorm(cfg, name="post_attn_norm")(h)
    x = x + h
    h = RMSNorm(cfg, name="mlp_norm")(x)
    h = MLP(cfg, name="mlp")(h)
    if cfg.sandwich_norms:
      h = RMSNorm(cfg, name="post_mlp_norm")(h)
    x = x + h
    x = _constrain(x, ("activation_batch", "activation_length", "activation_embed"), self.mesh, self.rules)
    return x, new_kv


class Decoder(nn.Module):
  """tokens [B,T] -> float32 logits [B,T,V] (and the updated cache when one is given)."""

  cfg: ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(self, tokens, positions, mask, cache: KVCache | None = None, return_hidden: bool = False):
    cfg = self.cfg
    pdt, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    b, t = tokens.shape
    mask = mask.astype(bool)
    embed = _param(
      self, "embed", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pdt
    )
    x = jnp.take(embed, tokens, axis=0).astype(dt)
    if cfg.scale_embeddings:
      x = x * jnp.asarray(cfg.hidden_size**0.5, dt)
    x = _constrain(x, ("activation_batch", "activation_length", "activation_embed"), self.mesh, self.rules)

    if cache is None:
      index = jnp.zeros((), jnp.int32)
      q_slots = jnp.arange(t)
      k_slots, k_valid, layer_kv = q_slots, mask, None
    else:
      index = cache.index
      q_slots = index + jnp.arange(t)
      k_slots = jnp.arange(cache.num_slots)
      k_valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
      layer_kv = (cache.k, cache.v)

    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    stack = nn.scan(
      block,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=(0, 0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, new_kv = stack(cfg, self.mesh, self.rules, name="layers")(
      x, jnp.asarray(cfg.layer_windows()), layer_kv, positions, index, q_slots, k_slots, k_valid
    )
    x = RMSNorm(cfg, name="final_norm")(x)
    if return_hidden:
      return x
    if cfg.tie_word_embeddings:
      logits = jnp.einsum("btd,vd->btv", x, embed.astype(dt), preferred_element_type=jnp.float32)
    else:
      head = _param(
        self, "lm_head", nn.initializers.normal(0.02), (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdt
      )
      logits = jnp.einsum("btd,dv->btv", x, head.astype(dt), preferred_element_type=jnp.float32)
    logits = _softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)
    logits = _constrain(logits, ("activation_batch", "activation_length", "activation_vocab"), self.mesh, self.rules)
    if cache is None:
      return logits, None
    new_cache = KVCache(k=new_kv[0], v=new_kv[1], valid=k_valid, index=index + t)
    return logits, new_cache


def default_positions(mask: Array) -> Array:
  """Positions that count only real tokens (left padding gets position 0)."""
  mask = mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
