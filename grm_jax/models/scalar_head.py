"""A scalar-head RM's model: the decoder plus a scalar head on the last real token. The meta RM (paper §4) and the
Bradley–Terry baseline (Table 2) are both this model.

The meta RM reads (meta prompt, judgement) and outputs one logit: is this sampled judgement right? The BT RM reads
(context, response) and outputs the response's scalar. The head is a single linear map of the final-normed hidden
state at the last real token of each row, the position that has read the whole sequence under causal attention. The
decoder may be cut to its first layers (`truncate`): a head read from a middle layer is then the whole model, and
scoring costs that fraction of a forward pass; `depth_states` gives the head's input at every depth at once, to
choose the depth. The paper's Table 17 prints raw logits as meta-RM scores, so `head_scores` returns logits, not
probabilities.

Params: `{"decoder": <decoder params>, "head": {"kernel": float32 [H], "bias": float32 []}}`. The decoder keeps the
shardings it was loaded with; the head is replicated (H floats: sharding it would only add communication).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import Block, RMSNorm, default_positions, embed_tokens, hidden_states


def init_head_params(decoder_params: Any, hidden_size: int) -> dict[str, Any]:
  """A scalar-head RM's params around existing decoder params, with a zero head.

  Zero kernel and bias rather than a small random head: the untrained RM is then neutral (logit 0 for every row: for
  the meta RM initial BCE exactly log 2 and held-out AUC exactly 0.5, for the BT RM every pair tied), instead of
  imposing an arbitrary random ranking that the first steps must undo. Training still starts at once: d loss / d kernel
  = (sigmoid(x) - y) * h is non-zero at step 1, and the decoder receives gradient from step 2, when the kernel is no
  longer zero.
  """
  head = {"kernel": jnp.zeros((int(hidden_size),), jnp.float32), "bias": jnp.zeros((), jnp.float32)}
  mesh = next((leaf.sharding.mesh for leaf in jax.tree.leaves(decoder_params)
               if isinstance(getattr(leaf, "sharding", None), NamedSharding)), None)
  if mesh is not None:
    head = jax.device_put(head, NamedSharding(mesh, PartitionSpec()))
  return {"decoder": decoder_params, "head": head}


def last_token_index(mask: jax.Array) -> jax.Array:
  """int32 [B]: the last position where `mask` is true, for right- or left-padded rows (T-1 for an empty row)."""
  mask = jnp.asarray(mask, bool)
  t = mask.shape[-1]
  return (t - 1 - jnp.argmax(mask[:, ::-1], axis=-1)).astype(jnp.int32)


def head_scores(cfg: ModelConfig, params: Any, tokens: jax.Array, mask: jax.Array, rng=None) -> jax.Array:
  """float32 [B]: the RM's raw logit for each row of `tokens` [B, T] (padding where `mask` is false); activations
  constrained by the mesh scope it is traced in. `rng`: a training forward's dropout key (LoRA dropout)."""
  hidden = hidden_states(cfg, params["decoder"], tokens, mask, rng)
  idx = last_token_index(mask)
  last = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0].astype(jnp.float32)
  head = params["head"]
  return last @ head["kernel"].astype(jnp.float32) + head["bias"].astype(jnp.float32)


def truncate(model, layers: int):
  """The same model cut to its first `layers` decoder layers (its final norm kept); `layers` <= 0 or >= the
  model's depth returns it unchanged. Slices the stacked layer params (no copy of the rest)."""
  cfg = model.config
  layers = int(layers)
  if layers <= 0 or layers >= cfg.num_layers:
    return model
  kinds = tuple(cfg.layer_types)[:layers] if cfg.layer_types else cfg.layer_types
  params = {**model.params, "layers": jax.tree.map(lambda a: a[:layers], model.params["layers"])}
  return dataclasses.replace(model, config=cfg.replace(num_layers=layers, layer_types=kinds), params=params)


def depth_states(cfg: ModelConfig, decoder_params: Any, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """float32 [B, L, H]: for d = 1..L, the final norm of the hidden state after d layers at each row's last real
  token, i.e. what the head of the decoder `truncate`d to d layers reads (entry L-1: the whole decoder's).
  Unconstrained: its inputs' shardings decide (`judges.scalar_rm.depth_program` traces it without a mesh)."""
  mask = jnp.asarray(mask, bool)
  positions = default_positions(mask)
  idx = last_token_index(mask)
  block, norm = Block(cfg), RMSNorm(cfg)
  zero = jnp.zeros((), jnp.int32)

  def layer(x, inputs):
    params, window = inputs
    x, _ = block.apply({"params": params}, x, window, None, None, None, positions, mask, zero)
    last = jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
    return x, norm.apply({"params": decoder_params["final_norm"]}, last).astype(jnp.float32)

  x = embed_tokens(cfg, decoder_params["embed"], tokens)
  _, states = jax.lax.scan(layer, x, (decoder_params["layers"], jnp.asarray(cfg.layer_windows())))
  return jnp.swapaxes(states, 0, 1)
