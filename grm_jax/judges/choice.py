"""The voted best response, with ties broken at random (jax: the draw takes a PRNG key, so it stays out of the
jax-free `voting`)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = Any


def choose_best(votes: Array, response_mask: Array, key: Any) -> Any:
  """int32 [B]: the argmax of the votes over real responses, ties broken uniformly at random.

  Equivalent to the paper's shuffle-then-argmax. An item whose samples all failed to parse has all-zero votes,
  so its pick is uniformly random among its responses.
  """
  votes = jnp.asarray(votes)
  mask = jnp.asarray(response_mask, bool)
  v = jnp.where(mask, votes.astype(jnp.float32), -jnp.inf)
  is_top = mask & (v == jnp.max(v, axis=-1, keepdims=True))
  noise = jax.random.uniform(key, v.shape)
  return jnp.argmax(jnp.where(is_top, noise, -1.0), axis=-1).astype(jnp.int32)
