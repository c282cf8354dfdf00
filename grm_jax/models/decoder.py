"""The Flax Linen decoder: Llama / Qwen2 / Gemma-2 from one `ModelConfig`.

Layers are stacked with `nn.scan` (one compiled block, params with a leading `layers` axis),
which keeps compile time flat in depth and lets the KV cache be one array per K and V.

The KV cache is explicit data, passed in and returned (`KVCache`):
  k      [layers, batch, kv_heads, head_dim, slots]
  v      [layers, batch, kv_heads, slots, head_dim]
         (both in the layout the two attention dots consume directly: XLA:CPU otherwise
         transposes the whole cache inside every decode step)
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


def init_cache(cfg: ModelConfig, batch: int, slots: int, dtype: Any = None) -> KVCache:
  """An empty cache with room for `slots` tokens per row (prompt + new tokens)."""
  shape = (cfg.num_layers, batch, cfg.num_kv_heads, slots, cfg.head_dim)
  k_shape = (cfg.num_layers, batch, cfg.num_kv_heads, cfg.head_dim, slots)
  dt = jnp.dtype(dtype or cfg.cache_dtype or cfg.dtype)
  return KVCache(
    k=jnp.zeros(k_shape, dt),
    v=jnp.zeros(shape, dt),
    valid=jnp.zeros((batch, slots), bool),
    index=jnp.zeros((), jnp.int32),
  )


_constrain = parallel.constrain


def _param(module, name, init, shape, names, dtype):
  return module.param(name, nn.with_logical_partitioning(init, names), shape, dtype)


def _lora_delta(module, name: str, x, in_names: tuple, out_names: tuple, out_shape: tuple):
  """The LoRA update of projection `name` for input x [..., *in] (in = the trailing `len(in_names)` axes): x A B
  scaled by alpha / rank, in the compute dtype; None when `name` carries no adapter. A [*in, r] starts uniform in
  +-1/sqrt(fan_in) and B [r, *out] at zero (PEFT's initialisation), so a fresh adapter adds exactly 0. Both are float32
  params whatever the base's dtype: only they train, and Adam's moments follow them. Given a "dropout" key (a training
  forward, `hidden_states(rng=)`), `lora.dropout` zeroes elements of x on its way into A and rescales the rest (each
  projection its own mask, as PEFT's per-layer `lora_dropout`); the base path W x never sees dropout."""
  lora = module.cfg.lora
  if not lora.wraps(name):
    return None
  n_in, dt = len(in_names), jnp.dtype(module.cfg.dtype)
  in_shape = x.shape[-n_in:]
  init_a = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform", in_axis=tuple(range(n_in)), out_axis=-1)
  a = _param(module, f"{name}_lora_a", init_a, (*in_shape, lora.rank), (*in_names, "lora_rank"), jnp.float32)
  b = _param(module, f"{name}_lora_b", nn.initializers.zeros, (lora.rank, *out_shape), ("lora_rank", *out_names),
             jnp.float32)
  if lora.dropout and module.has_rng("dropout"):
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - lora.dropout, x.shape)
    x = jnp.where(keep, x / jnp.asarray(1.0 - lora.dropout, x.dtype), jnp.zeros((), x.dtype))
  xa = jnp.tensordot(x, a.astype(dt), axes=n_in) * jnp.asarray(lora.scale, dt)
  return jnp.tensordot(xa, b.astype(dt), axes=1)


def _plus(y, delta):
  return y if delta is None else y + delta


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


def _allowed(rel, ok, window):
  """Causal + window + real keys -> bool [B, T, S]; `rel` [T, S] (slot distances) or [B, T, S] (positions)."""
  near = (rel >= 0) & (rel < window)
  return (near if near.ndim == 3 else near[None]) & ok[:, None, :]


# Batched dots in [batch, KVH, rows, Dh] layout (batch dims leading, contraction on the operands' natural axes),
# which XLA:CPU runs ~4x faster than the equivalent einsum. Both dots contract the rows operand's last axis with the
# other operand's axis 2 (k is stored [.., Dh, S], v [.., S, Dh]), batched over (batch, KVH).
_DIMS = (((3,), (2,)), ((0, 1), (0, 1)))
_LOW = jnp.finfo(jnp.float32).min


def _masked(cfg: ModelConfig, s, ok):
  return jnp.where(ok[:, None, None], _softcap(s * cfg.attn_scale, cfg.attn_logit_softcap), _LOW)


def _chunked_attention(cfg: ModelConfig, qr, keys, vals, valid, window, dt):
  """Cache-free attention of a long prompt in causal query chunks of `cfg.prefill_chunk`: each chunk attends only to
  keys up to its own end, so the masked upper triangle is never computed and each chunk's [rows, keys] scores stay
  small enough to stay in cache. qr [B, KVH, G, T, Dh] -> [B, T, KVH, G, Dh]."""
  b, kvh, g, t, hd = qr.shape
  chunk, outs = cfg.prefill_chunk, []
  for q0 in range(0, t, chunk):
    q1 = min(t, q0 + chunk)
    s_c = jax.lax.dot_general(qr[:, :, :, q0:q1].reshape(b, kvh, g * (q1 - q0), hd), keys[..., :q1], _DIMS,
                              preferred_element_type=jnp.float32)
    s_c = _softcap(s_c.reshape(b, kvh, g, q1 - q0, q1) * cfg.attn_scale, cfg.attn_logit_softcap)
    ok = _allowed(jnp.arange(q0, q1)[:, None] - jnp.arange(q1)[None, :], valid[:, :q1], window)
    p_c = jax.nn.softmax(jnp.where(ok[:, None, None], s_c, _LOW), axis=-1).astype(dt)
    o_c = jax.lax.dot_general(p_c.reshape(b, kvh, g * (q1 - q0), q1), vals[:, :, :q1], _DIMS)
    outs.append(o_c.reshape(b, kvh, g, q1 - q0, hd))
  return jnp.concatenate(outs, axis=3).transpose(0, 3, 1, 2, 4)


def _with_prefix(cfg: ModelConfig, qr, scores, vals, prefix, q_slots, positions, window, dt):
  """Attention over a shared prefix and the rows' own keys: the n rows sampled from one prompt read its prefix cache
  once, as n*G query rows of a single dot, instead of from n copies of it. One softmax over (prefix, own) keys, taken
  in two parts with a shared max and sum rather than over their concatenation: the [rows, keys] scores are not
  copied whole in HBM. qr [B, KVH, G, T, Dh], scores (own, masked) [B, KVH, G, T, S] -> [B, KVH, G*T, Dh]."""
  b, kvh, g, t, hd = qr.shape
  pk, pv, pvalid, ppos = prefix  # [P, KVH, Dh, Lp], [P, KVH, Lp, Dh], [P, Lp], None or [P, Lp]
  p_rows, offset = pk.shape[0], pk.shape[-1]
  n = b // p_rows
  q_pre = qr.reshape(p_rows, n, kvh, g * t, hd).transpose(0, 2, 1, 3, 4).reshape(p_rows, kvh, n * g * t, hd)
  s_pre = jax.lax.dot_general(q_pre, pk.astype(dt), _DIMS, preferred_element_type=jnp.float32)
  s_pre = s_pre.reshape(p_rows, kvh, n, g * t, offset).transpose(0, 2, 1, 3, 4).reshape(b, kvh, g, t, offset)
  if ppos is None:
    pre_rel = (offset + q_slots)[:, None] - jnp.arange(offset)[None, :]
  else:
    pre_rel = positions[:, :, None] - jnp.repeat(ppos, n, 0)[:, None, :]
  s_pre = _masked(cfg, s_pre, _allowed(pre_rel, jnp.repeat(pvalid, n, 0), window))
  top = jax.lax.stop_gradient(jnp.maximum(s_pre.max(-1, keepdims=True), scores.max(-1, keepdims=True)))
  e_pre, e_own = jnp.exp(s_pre - top), jnp.exp(scores - top)
  denom = e_pre.sum(-1, keepdims=True) + e_own.sum(-1, keepdims=True)
  own = (e_own / denom).astype(dt).reshape(b, kvh, g * t, -1)
  out = jax.lax.dot_general(own, vals, _DIMS)  # [B, KVH, G*T, Dh]
  p_pre = (e_pre / denom).astype(dt).reshape(p_rows, n, kvh, g * t, offset).transpose(0, 2, 1, 3, 4)
  o_pre = jax.lax.dot_general(p_pre.reshape(p_rows, kvh, n * g * t, offset), pv.astype(dt), _DIMS)
  return out + o_pre.reshape(p_rows, kvh, n, g * t, hd).transpose(0, 2, 1, 3, 4).reshape(b, kvh, g * t, hd)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, positions, mask, window, layer_cache, index):
    """x [B,T,D] -> (y [B,T,D], kv).

    Without a cache, kv is the k/v of these T tokens (k [B,KVH,Dh,T], v [B,KVH,T,Dh]). With
    `layer_cache` = (k [B,KVH,Dh,S], v [B,KVH,S,Dh], valid [B,S], prefix, key_pos), the T tokens are written at
    slot `index` and kv is the updated (k, v) of this layer. `prefix` (None or (pk [P,KVH,Dh,Lp], pv [P,KVH,Lp,Dh],
    pvalid [P,Lp], ppos)) is shared by each group of B/P consecutive rows; the cache's slots then follow the
    prefix's Lp slots. Masks come from slot distances unless key positions are given (`key_pos` [B,S] for the
    cache, `ppos` [P,Lp] for the prefix: the continuous engine's ring of slots, where a row's slots are not in
    position order); then a query sees a valid key when 0 <= its position - the key's < window.
    """
    cfg = self.cfg
    dt = jnp.dtype(cfg.dtype)
    h, kvh, hd = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    q, k, v, wo = self._project(x, positions)
    b, t = x.shape[:2]
    g = h // kvh
    k_new, v_new = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # [B,KVH,Dh,T], [B,KVH,T,Dh]
    prefix = key_pos = None
    if layer_cache is None:
      # The tokens among themselves: causal, real tokens only, within the window.
      keys, vals, valid, new_kv = k_new, v_new, mask, (k_new, v_new)
      q_slots = jnp.arange(t)
    else:
      # Write first, then attend over the cache: the old buffer is never read after the
      # update, so XLA updates it in place instead of copying it every step.
      k_cache, v_cache, valid, prefix, key_pos = layer_cache  # `valid` (and `key_pos`) already mark these T tokens
      k_cache = jax.lax.dynamic_update_slice(k_cache, k_new.astype(k_cache.dtype), (0, 0, 0, index))
      v_cache = jax.lax.dynamic_update_slice(v_cache, v_new.astype(v_cache.dtype), (0, 0, index, 0))
      keys, vals, new_kv = k_cache.astype(dt), v_cache.astype(dt), (k_cache, v_cache)
      q_slots = index + jnp.arange(t)
    qr = q.reshape(b, t, kvh, g, hd).transpose(0, 2, 3, 1, 4)  # [B, KVH, G, T, Dh]
    if layer_cache is None and cfg.prefill_chunk and t > cfg.prefill_chunk:
      out = _chunked_attention(cfg, qr, keys, vals, valid, window, dt)
      return self._output(out.reshape(b, t, h, hd), wo), new_kv
    scores = jax.lax.dot_general(qr.reshape(b, kvh, g * t, hd), keys, _DIMS, preferred_element_type=jnp.float32)
    if key_pos is None:
      own_rel = q_slots[:, None] - jnp.arange(keys.shape[-1])[None, :]
    else:
      own_rel = positions[:, :, None] - key_pos[:, None, :]
    scores = _masked(cfg, scores.reshape(b, kvh, g, t, -1), _allowed(own_rel, valid, window))
    if prefix is None:
      probs = jax.nn.softmax(scores, axis=-1).astype(dt)
      out = jax.lax.dot_general(probs.reshape(b, kvh, g * t, -1), vals, _DIMS)  # [B, KVH, G*T, Dh]
    else:
      out = _with_prefix(cfg, qr, scores, vals, prefix, q_slots, positions, window, dt)
    out = out.reshape(b, kvh, g, t, hd).transpose(0, 3, 1, 2, 4)
    return self._output(out.reshape(b, t, h, hd), wo), new_kv

  def _output(self, heads, wo):
    """The heads' outputs [B, T, H, Dh] -> [B, T, D] through the output projection (and its adapter)."""
    y = jnp.einsum("bthk,hkd->btd", heads, wo.astype(self.cfg.dtype))
    return _plus(y, _lora_delta(self, "o", heads, ("q_heads", "head_dim"), ("embed",), (self.cfg.hidden_size,)))

  def _project(self, x, positions):
    """q, k, v [B, T, heads, Dh] (biased for Qwen2, rotated, constrained to their heads' sharding) and the output
    kernel."""
    cfg = self.cfg
    pdt, dt = jnp.dtype(cfg.param_dtype), jnp.dtype(cfg.dtype)
    d, h, kvh, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    init = nn.initializers.normal(0.02)
    wq = _param(self, "q", init, (d, h, hd), ("embed", "q_heads", "head_dim"), pdt)
    wk = _param(self, "k", init, (d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt)
    wv = _param(self, "v", init, (d, kvh, hd), ("embed", "kv_heads", "head_dim"), pdt)
    wo = _param(self, "o", init, (h, hd, d), ("q_heads", "head_dim", "embed"), pdt)
    q = _plus(jnp.einsum("btd,dhk->bthk", x, wq.astype(dt)),
              _lora_delta(self, "q", x, ("embed",), ("q_heads", "head_dim"), (h, hd)))
    k = _plus(jnp.einsum("btd,dhk->bthk", x, wk.astype(dt)),
              _lora_delta(self, "k", x, ("embed",), ("kv_heads", "head_dim"), (kvh, hd)))
    v = _plus(jnp.einsum("btd,dhk->bthk", x, wv.astype(dt)),
              _lora_delta(self, "v", x, ("embed",), ("kv_heads", "head_dim"), (kvh, hd)))
    if cfg.qkv_bias:
      zeros = nn.initializers.zeros
      q = q + _param(self, "q_bias", zeros, (h, hd), ("q_heads", "head_dim"), pdt).astype(dt)
      k = k + _param(self, "k_bias", zeros, (kvh, hd), ("kv_heads", "head_dim"), pdt).astype(dt)
      v = v + _param(self, "v_bias", zeros, (kvh, hd), ("kv_heads", "head_dim"), pdt).astype(dt)
    heads = ("activation_batch", "activation_length", "activation_heads", None)
    q = _constrain(apply_rope(q, positions, cfg.rope_inv_freq()), heads)
    k = _constrain(apply_rope(k, positions, cfg.rope_inv_freq()), heads)
    v = _constrain(v, heads)
    return q, k, v, wo


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
    a = _plus(x @ gate.astype(dt), _lora_delta(self, "gate", x, ("embed",), ("mlp",), (f,)))
    a = jax.nn.silu(a) if cfg.mlp_activation == "silu" else jax.nn.gelu(a, approximate=True)
    a = a * _plus(x @ up.astype(dt), _lora_delta(self, "up", x, ("embed",), ("mlp",), (f,)))
    return _plus(a @ down.astype(dt), _lora_delta(self, "down", a, ("mlp",), ("embed",), (d,)))


class Block(nn.Module):
  """One pre-norm transformer block; the scan body (carry = hidden states)."""

  cfg: ModelConfig

  @nn.compact
  def __call__(self, x, window, k_cache, v_cache, valid, positions, mask, index, prefix=None, key_pos=None):
    cfg = self.cfg
    layer_cache = None if k_cache is None else (k_cache, v_cache, valid, prefix, key_pos)
    h = RMSNorm(cfg, name="attn_norm")(x)
    h, new_kv = Attention(cfg, name="attn")(h, positions, mask, window, layer_cache, index)
    if cfg.sandwich_norms:
      h = RMSNorm(cfg, name="post_attn_norm")(h)
    x = x + h
    h = RMSNorm(cfg, name="mlp_norm")(x)
    h = MLP(cfg, name="mlp")(h)
    if cfg.sandwich_norms:
      h = RMSNorm(cfg, name="post_mlp_norm")(h)
    x = x + h
    x = _constrain(x, ("activation_batch", "activation_length", "activation_embed"))
    return x, new_kv


def embed_tokens(cfg: ModelConfig, table, tokens):
  dt = jnp.dtype(cfg.dtype)
  x = jnp.take(table, tokens, axis=0).astype(dt)
  if cfg.scale_embeddings:
    x = x * jnp.asarray(cfg.hidden_size**0.5, dt)
  return _constrain(x, ("activation_batch", "activation_length", "activation_embed"))


def output_logits(cfg: ModelConfig, x, embed, head=None):
  """Final-normed hidden states -> float32 logits (tied or separate head, soft-capped)."""
  dt = jnp.dtype(cfg.dtype)
  if head is None:
    logits = jnp.einsum("btd,vd->btv", x, embed.astype(dt), preferred_element_type=jnp.float32)
  else:
    logits = jnp.einsum("btd,dv->btv", x, head.astype(dt), preferred_element_type=jnp.float32)
  logits = _softcap(logits.astype(jnp.float32), cfg.final_logit_softcap)
  return _constrain(logits, ("activation_batch", "activation_length", "activation_vocab"))


class Decoder(nn.Module):
  """tokens [B,T] -> (float32 logits [B,T,V], cache).

  cache=None, cache_slots=0: plain forward (training, scoring); returns (logits, None).
  cache=None, cache_slots=S:  prefill; returns a new cache of S slots holding these T tokens.
  cache=KVCache:              extend the cache with T tokens (decode); returns the new cache.
  last_only=True returns logits for the last position only ([B,1,V]).
  head=False returns the final-normed hidden states [B,T,H] instead of logits: training computes
  log-probs from them in sequence chunks (never holding [B,T,V]), and the meta RM puts its scalar head there.
  Activations are constrained to the shardings of the mesh scope it is traced in (`parallel.use_mesh`).
  """

  cfg: ModelConfig

  @nn.compact
  def __call__(
    self,
    tokens,
    positions,
    mask,
    cache: KVCache | None = None,
    cache_slots: int = 0,
    last_only: bool = False,
    head: bool = True,
  ):
    cfg = self.cfg
    pdt = jnp.dtype(cfg.param_dtype)
    b, t = tokens.shape
    mask = mask.astype(bool)
    embed = _param(
      self, "embed", nn.initializers.normal(1.0), (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), pdt
    )
    x = embed_tokens(cfg, embed, tokens)

    if cache is None:
      index, k_cache, v_cache, valid = jnp.zeros((), jnp.int32), None, None, None
    else:
      # Per-layer k/v are scanned inputs; `valid` (shared by all layers) gains the new tokens.
      index, k_cache, v_cache = cache.index, cache.k, cache.v
      valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, index))
    block = Block
    if cfg.remat:
      block = nn.remat(Block, prevent_cse=False, policy=jax.checkpoint_policies.nothing_saveable)
    stack = nn.scan(
      block,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},  # each layer its own LoRA dropout masks
      in_axes=(0, 0, 0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
      length=cfg.num_layers,
      unroll=cfg.num_layers if cfg.unroll_scans else 1,
      metadata_params={nn.PARTITION_NAME: "layers"},
    )
    x, (new_k, new_v) = stack(cfg, name="layers")(
      x, jnp.asarray(cfg.layer_windows()), k_cache, v_cache, valid, positions, mask, index
    )
    if last_only:  # prefill needs only the next-token logits; skip the [T, V] head matmul
      x = x[:, -1:]
    x = RMSNorm(cfg, name="final_norm")(x)
    lm_head = None
    if not cfg.tie_word_embeddings:
      lm_head = _param(
        self, "lm_head", nn.initializers.normal(0.02), (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), pdt
      )
    if not head:
      return x, None
    logits = output_logits(cfg, x, embed, lm_head)

    if cache is None and not cache_slots:
      return logits, None
    if cache is not None:
      return logits, KVCache(k=new_k, v=new_v, valid=valid, index=index + t)
    # Prefill: the new tokens' k/v go into a fresh cache of `cache_slots` slots.
    fresh = init_cache(cfg, b, cache_slots)
    new_cache = KVCache(
      k=jax.lax.dynamic_update_slice(fresh.k, new_k.astype(fresh.k.dtype), (0, 0, 0, 0, 0)),
      v=jax.lax.dynamic_update_slice(fresh.v, new_v.astype(fresh.v.dtype), (0, 0, 0, 0, 0)),
      valid=jax.lax.dynamic_update_slice(fresh.valid, mask, (0, 0)),
      index=jnp.asarray(t, jnp.int32),
    )
    return logits, new_cache


def default_positions(mask: Array) -> Array:
  """Positions that count only real tokens (left padding gets position 0)."""
  mask = mask.astype(jnp.int32)
  return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0)


def hidden_states(cfg: ModelConfig, params, tokens, mask, rng=None) -> jax.Array:
  """Final-normed hidden states [B, T, H] of right- or left-padded rows (positions count real tokens only). `rng`: a
  training forward's key, which `cfg.lora.dropout` > 0 draws its masks from (ignored otherwise)."""
  mask = mask.astype(bool)
  module = Decoder(cfg)
  rngs = {"dropout": rng} if rng is not None and cfg.lora.dropout else None
  hidden, _ = module.apply({"params": params}, tokens, default_positions(mask), mask, head=False, rngs=rngs)
  return hidden


# --------------------------------------------------------------------------- unrolled decode


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class LayerCaches:
  """The KV cache as one array per layer, for the decode loop.

  A stacked [L, ...] cache read inside a layer loop is sliced (copied) per layer and step;
  separate per-layer buffers are read in place and updated in place by the while_loop.

  k[i] [B,KVH,Dh,S], v[i] [B,KVH,S,Dh], valid [B,S], index: this cache's next slot.
  Optional shared prefix (prefix_k[i] [P,KVH,Dh,Lp], prefix_v[i], prefix_valid [P,Lp]): row r
  continues prompt r // (B / P), whose prefix is stored once however many rows sample from it.
  Optional positions ([B,S] of the cache's keys, [P,Lp] of the prefix's): masks then come from positions instead
  of slot distances (the continuous engine writes every row at one ring slot, whatever its own step).
  """

  k: tuple
  v: tuple
  valid: Array
  index: Array
  prefix_k: tuple | None = None
  prefix_v: tuple | None = None
  prefix_valid: Array | None = None
  positions: Array | None = None
  prefix_positions: Array | None = None

  @classmethod
  def after_prefix(cls, prefix: KVCache, rows: int, slots: int, dtype=None) -> LayerCaches:
    """Empty per-row caches of `slots` slots that continue the shared `prefix` cache."""
    n_layers, _, kvh, hd, _ = prefix.k.shape
    dt = dtype or prefix.k.dtype
    return cls(
      k=tuple(jnp.zeros((rows, kvh, hd, slots), dt) for _ in range(n_layers)),
      v=tuple(jnp.zeros((rows, kvh, slots, hd), dt) for _ in range(n_layers)),
      valid=jnp.zeros((rows, slots), bool),
      index=jnp.zeros((), jnp.int32),
      prefix_k=tuple(prefix.k[i] for i in range(n_layers)),
      prefix_v=tuple(prefix.v[i] for i in range(n_layers)),
      prefix_valid=prefix.valid,
    )


def split_layer_params(params) -> list:
  """Stacked layer params -> one param tree per layer (done once, outside the decode loop)."""
  layers = params["layers"]
  n = jax.tree_util.tree_leaves(layers)[0].shape[0]
  return [jax.tree_util.tree_map(lambda a, i=i: a[i], layers) for i in range(n)]


def decode_step(cfg: ModelConfig, params, layer_params, tokens, positions, mask, cache: LayerCaches):
  """Extend per-layer caches by T tokens with the layers unrolled: same math as Decoder
  (same Block, RMSNorm, embedding and head functions), laid out for a fast decode loop."""
  mask = mask.astype(bool)
  x = embed_tokens(cfg, params["embed"], tokens)
  block = Block(cfg)
  windows = cfg.layer_windows()
  valid = jax.lax.dynamic_update_slice(cache.valid, mask, (0, cache.index))
  key_pos = None
  if cache.positions is not None:
    key_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(cache.positions.dtype), (0, cache.index))
  ks, vs = [], []
  for i, lp in enumerate(layer_params):
    prefix = None
    if cache.prefix_k is not None:
      prefix = (cache.prefix_k[i], cache.prefix_v[i], cache.prefix_valid, cache.prefix_positions)
    x, (k, v) = block.apply(
      {"params": lp}, x, int(windows[i]), cache.k[i], cache.v[i], valid, positions, mask, cache.index, prefix, key_pos
    )
    ks.append(k)
    vs.append(v)
  x = RMSNorm(cfg).apply({"params": params["final_norm"]}, x)
  logits = output_logits(cfg, x, params["embed"], params.get("lm_head"))
  return logits, dataclasses.replace(cache, k=tuple(ks), v=tuple(vs), valid=valid, positions=key_pos,
                                     index=cache.index + tokens.shape[1])
