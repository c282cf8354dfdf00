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
  dt = jnp.dtype(dtype or cfg.cache_dtype or cfg.dtype)
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
  def __call__(self, x, positions, mask, window, layer_cache, index):
    """x [B,T,D] -> (y [B,T,D], (k, v) of these T tokens).

    `layer_cache` is None or this layer's read-only (k [B,S,KVH,Dh], v, valid [B,S]) from
    earlier steps. Keys are the cache slots plus the T new tokens; the caller writes the new
    k/v into the cache once for all layers, so the big cache is never copied per layer.
    """
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

    b, t = x.shape[:2]
    g = h // kvh
    qg = q.reshape(b, t, kvh, g, hd)
    neg = jnp.finfo(jnp.float32).min

    def scores_against(keys, allowed):  # allowed [B, T, S]
      s = jnp.einsum("btkgd,bskd->bkgts", qg, keys, preferred_element_type=jnp.float32)
      s = _softcap(s * cfg.attn_scale, cfg.attn_logit_softcap)
      return jnp.where(allowed[:, None, None], s, neg)

    # The new tokens among themselves: causal, real tokens only, within the window.
    rel = jnp.arange(t)[:, None] - jnp.arange(t)[None, :]
    self_allowed = ((rel >= 0) & (rel < window))[None] & mask[:, None, :]
    parts = [scores_against(k, self_allowed)]
    values = [v]
    if layer_cache is not None:
      k_cache, v_cache, valid = layer_cache
      rel_c = (index + jnp.arange(t))[:, None] - jnp.arange(k_cache.shape[1])[None, :]
      cache_allowed = (rel_c < window)[None] & valid[:, None, :]
      parts.insert(0, scores_against(k_cache.astype(dt), cache_allowed))
      values.insert(0, v_cache.astype(dt))
    scores = jnp.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    probs = jax.nn.softmax(scores, axis=-1).astype(dt)
    out = 0
    start = 0
    for vals in values:
      width = vals.shape[1]
      out = out + jnp.einsum("bkgts,bskd->btkgd", probs[..., start : start + width], vals)
      start += width
    y = jnp.einsum("bthk,hkd->btd", out.reshape(b, t, h, hd), wo.astype(dt))
    return y, (k, v)


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
  def __call__(self, x, window, k_cache, v_cache, valid, positions, mask, index):
    cfg = self.cfg
    layer_cache = None if k_cache is None else (k_cache, v_cache, valid)
    h = RMSNorm(cfg, name="attn_norm")(x)
    h, new_kv = Attention(cfg, self.mesh, self.rules, name="attn")(h, positions, mask, window, layer_cache, index)
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
  """tokens [B,T] -> (float32 logits [B,T,V], cache).

  cache=None, cache_slots=0: plain forward (training, scoring); returns (logits, None).
  cache=None, cache_slots=S:  prefill; returns a new cache of S slots holding these T tokens.
  cache=KVCache:              extend the cache with T tokens (decode); returns the new cache.
  last_only=True returns logits for the last position only ([B,1,V]).
  """

  cfg: ModelConfig
  mesh: Any = None
  rules: tuple = ()

  @nn.compact
  def __call__(
    self, tokens, positions, mask, cache: KVCache | None = None, cache_slots: int = 0, last_only: bool = False
  ):
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
      index, k_cache, v_cache, valid = jnp.zeros((), jnp.int32), None, None, None
    else:
      # Per-layer k/v are scanned inputs; `valid` is shared by all layers.
      index, k_cache, v_cache, valid = cache.index, cache.k, cache.v, cache.valid

    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    stack = nn.scan(
      block,
      variable_axes={"params": 0},
      split_rngs={"params": True},
      in_axes=(0, 0, 0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, (new_k, new_v) = stack(cfg, self.mesh, self.rules, name="layers")(
      x, jnp.asarray(cfg.layer_windows()), k_cache, v_cache, valid, positions, mask, index
    )
    if last_only:  # prefill needs only the next-token logits; skip the [T, V] head matmul
      x = x[:, -1:]
    x = RMSNorm(cfg, name="final_norm")(x)
    if cfg.tie_word_embeddings:
      logits = jnp.einsum("btd,vd->btv", x, embed.astype(dt), preferred_element_type=jnp.float32)
    else:
      head = _param(
        self, "lm_head", nn.initializers.normal(0.02), (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdt
      )
      logits = jnp.einsum("btd,dv->btv", x, head.astype(dt), preferred_element_type=jnp.float32)
    logits = _softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)
    logits = _constrain(logits, ("activation_batch", "activation_length", "activation_vocab"), self.mesh, self.rules)

    if cache is None and not cache_slots:
      return logits, None
    if cache is None:
      cache = init_cache(cfg, b, cache_slots)
    # One in-place write of all layers' new k/v at slots [index, index + t).
    start = (0, 0, index, 0, 0)
    new_cache = KVCache(
      k=jax.lax.dynamic_update_slice(cache.k, new_k.astype(cache.k.dtype), start),
      v=jax.lax.dynamic_update_slice(cache.v, new_v.astype(cache.v.dtype), start),
      valid=jax.lax.dynamic_update_slice(cache.valid, mask, (0, index)),
      index=index + t,
    )
    return logits, new_cache


def default_positions(mask: Array) -> Array:
  """Positions that count only real tokens (left padding gets position 0)."""
  mask = mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)
