"""Scalar-head RMs at work: the scores of token sequences, batched by length, on the model's mesh.

The meta RM (`judges.meta_rm`: a judgement's logit, MetaRM@k) and the Bradley–Terry baseline (`stages.btrm`: a
response's scalar) are the same model (`models.scalar_head`: the decoder plus a scalar head on the last real token),
and score through the same functions: `score_sequences` (each sequence's head output) and `sequence_depth_states`
(the head's input at every depth, for the probe that chooses one).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np

from grm_jax import parallel
from grm_jax.models.scalar_head import depth_states, head_scores
from grm_jax.train.batching import pad_rows


@parallel.per_mesh(maxsize=8)
def score_program(cfg):
  """jit(scores)(params, tokens [B, T], mask) -> float32 [B]: the head's logits (the meta RM's at evaluation, the BT
  RM's scalars), with the activations sharded on the current mesh."""
  return jax.jit(lambda p, t, m: head_scores(cfg, p, t, m))


@functools.lru_cache(maxsize=4)
def depth_program(cfg):
  """jit(depth_states)(decoder params, tokens [B, T], mask) -> float32 [B, L, H]: the probe's one forward pass. It
  constrains no activation (its inputs' shardings decide), whatever the scope, as it always has."""
  return parallel.bound(jax.jit(lambda p, t, m: depth_states(cfg, p, t, m)), parallel.NO_MESH)


def _by_batch(model, fn: Callable, seqs: Sequence[Sequence[int]], batch_size: int, max_len: int, out: np.ndarray):
  """Fill `out[i]` with `fn(tokens, mask)` of each sequence, batched by similar length (less padding), in batches of
  a multiple of the data x fsdp shards of the model's mesh."""
  with model.scope():
    multiple = parallel.batch_shards()
    step = -(-int(batch_size) // multiple) * multiple
    order = np.argsort([len(s) for s in seqs], kind="stable")
    for b0 in range(0, len(order), step):
      idx = order[b0 : b0 + step]
      tokens, mask = pad_rows([seqs[i] for i in idx], model.pad_id, step, max_len)
      if model.mesh is not None:
        tokens, mask = parallel.shard_batch(tokens), parallel.shard_batch(mask)
      out[idx] = parallel.to_host(fn(tokens, mask))[: len(idx)]
  return out


def score_sequences(model, params, seqs: Sequence[Sequence[int]], batch_size: int = 8,
                    max_len: int = 1 << 30) -> np.ndarray:
  """float32 [N]: the scalar-head RM's logit of each token sequence (`model`: its decoder's config, pad id and mesh;
  `params`: `{"decoder", "head"}`)."""
  with model.scope():
    fn = score_program(model.config)
  return _by_batch(model, lambda t, m: fn(params, t, m), seqs, batch_size, max_len, np.zeros(len(seqs), np.float32))


def sequence_depth_states(model, seqs: Sequence[Sequence[int]], batch_size: int = 8, max_len: int = 1 << 30,
                          depths: Sequence[int] | None = None) -> np.ndarray:
  """float32 [N, D, H]: each sequence's head input after each of `depths` layers of `model` (default every depth
  1..L; `scalar_head.depth_states`). Only those depths reach the host."""
  cfg = model.config
  depths = list(range(1, cfg.num_layers + 1)) if depths is None else [int(d) for d in depths]
  fn = depth_program(cfg)
  keep = np.asarray(depths) - 1
  return _by_batch(model, lambda t, m: fn(model.params, t, m)[:, keep], seqs, batch_size, max_len,
                   np.zeros((len(seqs), len(depths), cfg.hidden_size), np.float32))
