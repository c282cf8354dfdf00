"""The weights as the sampler reads them: compute dtype, split over `tensor` only (whole on every data / fsdp shard)."""

from __future__ import annotations

import jax

from grm_jax import parallel
from grm_jax.models import weights


@parallel.per_mesh(maxsize=16, program=False)
def sampling_shardings(cfg):
  """Where the sampler keeps the weights on the current mesh: split over `tensor` as the rules say, but whole on
  every data / fsdp shard. Training shards weights over fsdp too; read that way, every decode step would all-gather
  every weight (fsdp x the bytes it must read). The sampler reshards once (`place`) instead."""
  shapes, names = weights.abstract_params(cfg)
  return parallel.tree_shardings(names, shapes, parallel.override(parallel.scope().rules, embed=None))


def sampling_params(cfg, params):
  """Params as the sampler's loop reads them (inside its jit): compute dtype (`weights.for_compute`) and
  `sampling_shardings`. On one device with f32 compute this is the params themselves."""
  params = weights.for_compute(cfg, params)
  if parallel.current_mesh() is None:
    return params
  return jax.tree.map(jax.lax.with_sharding_constraint, params, sampling_shardings(cfg))


def place(cfg, params):
  """`sampling_params` outside jit, for an engine that keeps them for its lifetime: leaves already in the compute
  dtype and placement are the same arrays (one device, f32 compute: no copy)."""
  params = weights.for_compute(cfg, params)
  if parallel.current_mesh() is None:
    return params
  return jax.jit(lambda p: p, out_shardings=sampling_shardings(cfg))(params)
