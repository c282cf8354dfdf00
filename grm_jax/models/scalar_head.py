"""The meta RM's model: the decoder plus a scalar head on the last real token (paper §4).

The meta RM reads (meta prompt, judgement) and outputs one logit: is this sampled judgement right? The head is a
single linear map of the final-normed hidden state at the last real token of each row, the position that has read
the whole sequence under causal attention. The paper's Table 17 prints raw logits as meta-RM scores, so `meta_scores`
returns logits, not probabilities.

Params: `{"decoder": <decoder params>, "head": {"kernel": float32 [H], "bias": float32 []}}`. The decoder keeps the
shardings it was loaded with; the head is replicated (H floats: sharding it would only add communication).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import hidden_states


def init_meta_params(decoder_params: Any, hidden_size: int) -> dict[str, Any]:
  """The meta RM's params around existing decoder params, with a zero head.

  Zero kernel and bias rather than a small random head: the untrained meta RM is then neutral (logit 0 for every
  judgement, initial BCE exactly log 2, held-out AUC exactly 0.5), instead of imposing an arbitrary random ranking
  that the first steps must undo. Training still starts at once: d loss / d kernel = (sigmoid(x) - y) * h is non-zero
  at step 1, and the decoder receives gradient from step 2, when the kernel is no longer zero.
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


def meta_scores(cfg: ModelConfig, params: Any, tokens: jax.Array, mask: jax.Array, mesh=None, rules=()) -> jax.Array:
  """float32 [B]: the meta RM's raw logit for each row of `tokens` [B, T] (padding where `mask` is false)."""
  hidden = hidden_states(cfg, params["decoder"], tokens, mask, mesh, rules)
  idx = last_token_index(mask)
  last = jnp.take_along_axis(hidden, idx[:, None, None], axis=1)[:, 0].astype(jnp.float32)
  head = params["head"]
  return last @ head["kernel"].astype(jnp.float32) + head["bias"].astype(jnp.float32)
