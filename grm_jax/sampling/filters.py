"""The sampling distribution as pure functions of logits: temperature, top-k, top-p.

`sampling_logits` returns the log-probabilities the sampler actually draws from, so the
log-prob it reports for a token is exactly what a trainer recomputes from the same logits
(GRPO's importance ratio depends on that agreement).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """Keep the k largest logits per row (ties with the k-th value are kept too)."""
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = jax.lax.top_k(logits, k)[0][..., -1:]
  return jnp.where(logits >= kth, logits, NEG_INF)


def top_p_mask(logits: jax.Array, p: jax.Array | float) -> jax.Array:
  """Nucleus filter: keep the smallest prefix of tokens (by descending probability) whose
  mass reaches p; the most likely token is always kept. Tokens tied with the last kept
  probability are kept too, so the result does not depend on sort order among equals."""
  probs = jax.nn.softmax(logits, axis=-1)
  sorted_probs = jnp.sort(probs, axis=-1)[..., ::-1]
  before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs  # mass strictly before each token
  # p >= 1 keeps everything: the float32 mass before a near-zero token can round up to 1.
  keep_sorted = (before < p) | (jnp.asarray(p) >= 1.0)
  # Smallest kept probability per row; everything at least that likely is kept.
  threshold = jnp.min(jnp.where(keep_sorted, sorted_probs, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(probs >= threshold, logits, NEG_INF)


def sampling_logits(
  logits: jax.Array, temperature: jax.Array | float, top_p: jax.Array | float = 1.0, top_k: int = 0, use_top_p=False
) -> jax.Array:
  """Normalised log-probs of the sampling distribution (float32, -inf where filtered).

  With top_k=0 and use_top_p=False this is exactly log_softmax(logits / temperature).
  `top_k` and `use_top_p` are static (they change the program); temperature and top_p are data.
  """
  x = logits.astype(jnp.float32) / temperature
  x = top_k_mask(x, top_k)
  if use_top_p:
    x = top_p_mask(x, top_p)
  return jax.nn.log_softmax(x, axis=-1)


def _last_positive(x: jax.Array) -> jax.Array:
  """Index of the last entry > 0 along the last axis (0 if none)."""
  n = x.shape[-1]
  return (n - 1 - jnp.argmax(jnp.flip(x > 0, axis=-1), axis=-1)).astype(jnp.int32)


def _uniforms(key, rows: int) -> jax.Array:
  """float32 [rows] in [0, 1): from one key, or one per row from a typed key array [rows] (a row's draw then depends
  on its own key alone, not on which other rows share the batch)."""
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 1:
    return jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32))(key)
  return jax.random.uniform(key, (rows,), jnp.float32)


def categorical(key, logp: jax.Array, block: int = 256) -> jax.Array:
  """One draw per row from log-probs [B, V] by inverse CDF with a single uniform per row.

  `key` is one PRNG key for the whole batch, or a typed key array [B], one per row.

  Why not `jax.random.categorical`: its Gumbel-max draws V uniforms per row, and on XLA:CPU that RNG alone costs
  ~1.8 ms per row per step for SmolLM2's 49k vocabulary (more than the model at batch 32). Here the vocabulary is
  cut into blocks of `block` tokens: the uniform picks a block by the running sum of block masses, then a token by
  the running sum inside that block, so only two short cumsums run per row. Float rounding can push the uniform
  past the last positive mass; both picks are clamped to the last token / block with positive probability, so a
  filtered (-inf) token is never drawn.
  """
  probs = jnp.exp(logp.astype(jnp.float32))
  b, v = probs.shape
  nb = -(-v // block)
  blocks = jnp.pad(probs, ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
  mass = blocks.sum(-1)  # [B, nb]
  cum = jnp.cumsum(mass, axis=-1)
  u = _uniforms(key, b) * cum[:, -1]
  blk = jnp.minimum(jnp.sum(cum <= u[:, None], axis=-1).astype(jnp.int32), _last_positive(mass))
  inner = jnp.take_along_axis(blocks, blk[:, None, None], axis=1)[:, 0]  # [B, block]
  rest = u - (jnp.take_along_axis(cum, blk[:, None], axis=-1)[:, 0] - jnp.take_along_axis(mass, blk[:, None], -1)[:, 0])
  idx = jnp.sum(jnp.cumsum(inner, axis=-1) <= rest[:, None], axis=-1).astype(jnp.int32)
  return blk * block + jnp.minimum(idx, _last_positive(inner))


def sample_token(key, logits, temperature, top_p=1.0, top_k: int = 0, use_top_p=False, greedy=False):
  """(token int32 [B], log-prob float32 [B]) for logits [B, V].

  Greedy (temperature 0) returns the argmax and its log-prob under the unscaled softmax.
  """
  if greedy:
    token = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  else:
    logp = sampling_logits(logits, temperature, top_p, top_k, use_top_p)
    token = categorical(key, logp)
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def sample_rows(keys, logits, temperature, top_p, top_k):
  """`sample_token` with every setting per row (arrays [B]): the continuous engine's rows belong to different
  requests. temperature 0 = greedy (argmax, log-prob under the unscaled softmax), top_k 0 = off, top_p 1 = off.
  A row gets exactly the token and log-prob `sample_token` gives it with its own settings; the sort that top-k /
  top-p need runs only when some sampled row asks for one."""
  greedy = temperature <= 0
  x = logits.astype(jnp.float32) / jnp.where(greedy, 1.0, temperature)[:, None]
  top_k = jnp.where(greedy, 0, top_k)
  top_p = jnp.where(greedy, 1.0, top_p)

  def filtered(x):
    v = x.shape[-1]
    kth = jnp.take_along_axis(jnp.sort(x, axis=-1)[:, ::-1], jnp.clip(top_k - 1, 0, v - 1)[:, None], axis=-1)
    x = jnp.where((top_k[:, None] > 0) & (x < kth), NEG_INF, x)
    return top_p_mask(x, top_p[:, None])

  x = jax.lax.cond(jnp.any((top_k > 0) | (top_p < 1.0)), filtered, lambda x: x, x)
  logp = jax.nn.log_softmax(x, axis=-1)
  best = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  token = jax.lax.cond(jnp.all(greedy), lambda: best, lambda: jnp.where(greedy, best, categorical(keys, logp)))
  return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]
