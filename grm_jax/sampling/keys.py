"""Per-sample key streams: sample j of a prompt draws from a key that is a function of (seed, salt, j) alone."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np


@jax.jit
def _row_key_data(seeds, salts, samples):
  """uint32 key data [R, 2]: row r's stream is fold_in(fold_in(key(seeds[r]), salts[r]), samples[r])."""

  def one(seed, salt, sample):
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), salt), sample))

  return jax.vmap(one)(seeds, salts, samples)


def key_data(seeds, salts, samples) -> np.ndarray:
  """uint32 [R, 2] key data of rows given by their (seed, salt, sample index) each."""
  return np.asarray(_row_key_data(np.asarray(seeds, np.uint32), np.asarray(salts, np.uint32),
                                  np.asarray(samples, np.uint32)))


def row_keys(seeds: Sequence[int], salts: Sequence[int], n: int) -> np.ndarray:
  """uint32 [len(seeds) * n, 2]: the key of sample j of prompt i is a function of (seeds[i], salts[i], j) alone.

  So a prompt's samples never depend on what else shares its call, where it sits in the batch, the bucket sizes,
  the engine's slot count or arrival order: a server can merge requests, and a stage can change its batch size,
  without changing anyone's samples. `generate` passes (seed, position in `prompts`) for one seed, or (seeds[i], 0)
  for per-prompt seeds."""
  seeds = np.repeat(np.asarray(seeds, np.uint32), n)
  salts = np.repeat(np.asarray(salts, np.uint32), n)
  samples = np.tile(np.arange(n, dtype=np.uint32), len(seeds) // max(n, 1))
  return key_data(seeds, salts, samples)
