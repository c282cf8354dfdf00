"""Per-token log-probs (and entropies) of a sequence under the model, computed in sequence chunks.

The trainer's log-probs must match the sampler's (GRPO compares them token by token), so they are
taken under the same distribution: log_softmax(logits / temperature) over the full vocabulary, in float32. A full
[B, T, V] logits tensor is 1.6 GB for SmolLM2 at 8 x 1,024 tokens and its gradient as much again, so the head
runs over chunks of `chunk` positions inside a rematerialised scan: the backward pass recomputes one chunk's
logits at a time and the peak is [B, chunk, V].

A training loss needs the log-probs of the completion tokens only, and a judge's prompt is most of its row (an RFT
row is ~80% prompt at the smoke preset). Given the loss mask (`needed`), a chunk that holds no needed position in
any row skips the head (a `lax.cond`; forward and backward): its positions read 0. The needed positions' values are
the same numbers as without it, chunk for chunk.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import hidden_states, output_logits


def head_logprobs(cfg: ModelConfig, params, hidden, targets, temperature: float = 1.0, chunk: int = 256,
                  needed=None):
  """log p(targets[:, t] | hidden[:, t]) and the entropy at each position, both float32 [B, T].

  `hidden[:, t]` is the state after reading token t, so callers pass `targets = tokens[:, 1:]` with
  `hidden[:, :-1]` (see `token_logprobs`). `needed` [B, T] (any dtype, nonzero = needed): chunks with no needed
  position skip the head and read 0.
  """
  b, t, _ = hidden.shape
  chunk = max(1, min(chunk, t))
  pad = (-t) % chunk
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  n = (t + pad) // chunk
  hs = hidden.reshape(b, n, chunk, -1).swapaxes(0, 1)
  ts = targets.reshape(b, n, chunk).swapaxes(0, 1)
  if needed is None:
    live = jnp.ones((n,), bool)
  else:
    live = jnp.pad(needed != 0, ((0, 0), (0, pad))).reshape(b, n, chunk).any(axis=(0, 2))
  embed, lm_head = params["embed"], params.get("lm_head")
  inv_t = 1.0 / float(temperature)

  @jax.checkpoint
  def one(h, tgt):
    logits = output_logits(cfg, h, embed, lm_head) * inv_t
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, tgt[..., None], axis=-1)[..., 0]
    probs = jnp.exp(logits - logz[..., None])
    entropy = logz - jnp.sum(probs * logits, axis=-1)
    return picked - logz, jax.lax.stop_gradient(entropy)

  def skip(h, tgt):
    zeros = jnp.zeros(tgt.shape, jnp.float32)
    return zeros, zeros

  def body(_, xs):
    h, tgt, go = xs
    if needed is None:  # no predicate: the plain program, no conditional in it
      return None, one(h, tgt)
    return None, jax.lax.cond(go, one, skip, h, tgt)

  _, (logp, ent) = jax.lax.scan(body, None, (hs, ts, live), unroll=bool(cfg.unroll_scans))
  logp = logp.swapaxes(0, 1).reshape(b, -1)[:, :t]
  ent = ent.swapaxes(0, 1).reshape(b, -1)[:, :t]
  return logp, ent


def token_logprobs(cfg: ModelConfig, params, tokens, mask, temperature: float = 1.0, chunk: int = 256, rng=None,
                   needed=None):
  """Log-prob of each token given the ones before it, [B, T] float32 (position 0 gets 0), and the entropy of the
  distribution that predicted it. Rows may be padded on either side; padded positions carry garbage that the
  caller's loss mask removes. Activations are constrained by the mesh scope it is traced in. `rng`: a training
  forward's dropout key (`make_train_step` puts one in each micro-batch; LoRA dropout draws from it). `needed`
  [B, T]: the positions whose values are read (a loss mask); head chunks with none of them are skipped."""
  hidden = hidden_states(cfg, params, tokens, mask, rng)
  logp, ent = head_logprobs(cfg, params, hidden[:, :-1], tokens[:, 1:], temperature, chunk,
                            None if needed is None else needed[:, 1:])
  zeros = jnp.zeros((tokens.shape[0], 1), jnp.float32)
  return jnp.concatenate([zeros, logp], axis=1), jnp.concatenate([zeros, ent], axis=1)
