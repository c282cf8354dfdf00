"""The static sampler: one jitted program per call shape - prefill once, then decode in a while_loop until the
call's longest row stops.

`generate` runs on the continuous engine (`sampling.engine`); this path stays as the baseline that
`benchmarks/continuous.py` measures the engine against and as the reference of the engine's equality tests. For each
call the host left-pads the distinct prompts into a [P, Lp] block (Lp and P rounded up to buckets). On device:
  1. prefill the P prompts once into a prefix KV cache of Lp slots;
  2. give each of the rows = P * n samples its own cache of max_new_tokens slots only: the n
     rows of a prompt read its prefix cache once per step, as one batched dot (decoder.Attention);
  3. decode inside one `lax.while_loop` that stops as soon as every row hit a stop token.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import parallel
from grm_jax.buckets import batch_bucket, length_bucket
from grm_jax.models.decoder import Decoder, LayerCaches, decode_step, default_positions, split_layer_params
from grm_jax.models.model import Model
from grm_jax.sampling.filters import sample_token
from grm_jax.sampling.generate import GenerateOutput, prepare
from grm_jax.sampling.keys import row_keys
from grm_jax.sampling.params import sampling_params

MAX_PROMPTS_PER_CALL = 64  # distinct prompts per compiled call (bounds the prefix cache and host arrays)


def _one_step(cfg, params, layer_params, tok, pos, cache):
  """One decode step of every row: the while loop's model call (`decode_program` compiles it alone)."""
  rows = tok.shape[0]
  return decode_step(cfg, params, layer_params, tok[:, None], pos[:, None], jnp.ones((rows, 1), bool), cache)


@parallel.per_mesh(maxsize=16)
def decode_program(cfg):
  """jit(step)(params, layer_params, tok [R], pos [R], cache) -> (logits [R, 1, V], cache): the loop body's model
  call as its own program, with the per-layer params the loop reads (split once, outside the loop). The loop has no
  other per-step work on weights or cache, so this is what a decode step moves and computes (grm_jax.aot). The
  cache is donated: the loop updates it in place, and an undonated program would copy it whole every step."""
  return jax.jit(functools.partial(_one_step, cfg), donate_argnums=(4,))


def call_shape(num_prompts: int, n: int, longest_prompt: int) -> tuple[int, int]:
  """(prompt rows, padded prompt length) of one sampler call on the current mesh: prompts rounded up to a power of
  two (and to the data x fsdp shards when needed), the length to its bucket. One place, so `generate` and
  grm_jax.aot agree."""
  shard_mult = parallel.batch_shards()
  batch = batch_bucket(num_prompts, shard_mult if n == 1 else 1)
  if (batch * n) % shard_mult:
    batch = math.lcm(batch, shard_mult)
  return batch, length_bucket(longest_prompt)


@parallel.per_mesh(maxsize=64)
def sampler_program(cfg, batch, prompt_len, n, max_new, top_k, use_top_p, greedy, num_stop):
  """The jitted sampler for one call shape: jit(run)(params, tokens [batch, prompt_len], mask, row_keys
  [batch * n, 2] (uint32 key data, `row_keys`), temperature, top_p, stop_ids [num_stop], alive [batch * n]) ->
  (tokens, log-probs, lengths, stopped, steps)."""
  module = Decoder(cfg)
  rows = batch * n
  constrain = parallel.constrain

  def run(params, tokens, mask, row_keys, temperature, top_p, stop_ids, alive):
    params = sampling_params(cfg, params)
    keys = jax.random.wrap_key_data(row_keys)
    variables = {"params": params}
    positions = default_positions(mask)
    lengths = mask.sum(-1).astype(jnp.int32)
    logits, prefix = module.apply(variables, tokens, positions, mask, cache_slots=prompt_len, last_only=True)

    def rep(x, axis):
      return jnp.repeat(x, n, axis=axis)

    # The prompt's cache is stored once and shared by its n rows (decoder.LayerCaches); each
    # row gets its own cache only for the tokens it generates.
    cache = LayerCaches.after_prefix(prefix, rows, max_new, dtype=jnp.dtype(cfg.cache_dtype or cfg.dtype))
    cache = jax.tree_util.tree_map(
      lambda x: constrain(x, ("cache_batch", "cache_heads", None, None)) if x.ndim == 4 else x, cache
    )
    layer_params = split_layer_params(params)
    lengths = rep(lengths, 0)
    # Bucket-filler rows (no tokens) and rows beyond a prompt's own sample count are done from the start.
    real = (lengths > 0) & alive

    def pick(step, logits):
      step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
      return sample_token(step_keys, logits, temperature, top_p, top_k, use_top_p, greedy)

    def record(step, tok, logp, done, out_t, out_lp, n_out):
      stop = jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)
      keep = ~done & ~stop
      out_t = out_t.at[:, step].set(jnp.where(keep, tok, 0))
      out_lp = out_lp.at[:, step].set(jnp.where(keep, logp, 0.0))
      n_out = jnp.where(keep, step + 1, n_out)
      stopped_now = ~done & stop
      return done | stop, out_t, out_lp, n_out, stopped_now

    tok, logp = pick(0, rep(logits[:, -1], 0))
    out_t = constrain(jnp.zeros((rows, max_new), jnp.int32), ("activation_batch", None))
    out_lp = constrain(jnp.zeros((rows, max_new), jnp.float32), ("activation_batch", None))
    n_out = jnp.zeros((rows,), jnp.int32)
    done, out_t, out_lp, n_out, hit = record(0, tok, logp, ~real, out_t, out_lp, n_out)
    state = (jnp.int32(1), tok, cache, done, out_t, out_lp, n_out, hit)

    def cond(state):
      step, done = state[0], state[3]
      return (step < max_new) & ~jnp.all(done)

    def body(state):
      step, tok, cache, done, out_t, out_lp, n_out, hit = state
      logits, cache = _one_step(cfg, params, layer_params, tok, lengths + step - 1, cache)
      tok, logp = pick(step, logits[:, 0])
      done, out_t, out_lp, n_out, now = record(step, tok, logp, done, out_t, out_lp, n_out)
      return step + 1, tok, cache, done, out_t, out_lp, n_out, hit | now

    state = jax.lax.while_loop(cond, body, state)
    return state[4], state[5], state[6], state[7], state[0]

  return jax.jit(run)


def generate_static(
  model: Model,
  prompts: Sequence[Sequence[int]],
  n: int | Sequence[int] = 1,
  max_new_tokens: int = 256,
  temperature: float = 0.5,
  top_p: float = 1.0,
  top_k: int = 0,
  seed: int | Sequence[int] = 0,
  stop_token_ids: Sequence[int] | None = None,
  max_prompts_per_call: int = MAX_PROMPTS_PER_CALL,
) -> GenerateOutput:
  """`generate`'s contract on the static path: chunks of `max_prompts_per_call` distinct prompts, each chunk one
  program that prefills its prompts and decodes all their rows until the longest stops. Same keys, same
  distribution, same outputs as the engine (tests/sampling/test_engine.py); kept as the baseline and reference."""
  if not prompts:
    return GenerateOutput([], [], [])
  call = prepare(model, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, stop_token_ids)
  n = max(call.want)
  greedy, use_top_p = temperature == 0, top_p < 1.0
  stop_arr = np.full((max(1, len(call.stops)),), -1, np.int32)
  stop_arr[: len(call.stops)] = call.stops
  results = [None] * len(call.prompts)
  with model.scope():  # the model's own mesh, whatever the caller's scope
    for c in range(0, len(call.prompts), max_prompts_per_call):
      chunk = range(c, min(c + max_prompts_per_call, len(call.prompts)))
      batch, plen = call_shape(len(chunk), n, max(len(call.prompts[d]) for d in chunk))
      tokens = np.full((batch, plen), model.pad_id, np.int32)
      mask = np.zeros((batch, plen), bool)
      alive = np.zeros((batch, n), bool)
      call_seeds, call_salts = np.zeros(batch, np.int64), np.zeros(batch, np.int64)
      for i, d in enumerate(chunk):
        p = call.prompts[d]
        call_seeds[i], call_salts[i] = call.seeds[d], call.salts[d]
        tokens[i, plen - len(p) :] = p
        mask[i, plen - len(p) :] = True
        alive[i, : call.want[d]] = True
      prog = sampler_program(model.config, batch, plen, n, max_new_tokens, top_k, use_top_p, greedy, len(stop_arr))
      alive = alive.reshape(-1)
      keys_h = row_keys(call_seeds, call_salts, n)
      if model.mesh is not None:
        tokens_d = parallel.shard_batch(tokens)
        mask_d = parallel.shard_batch(mask)
        alive_d = parallel.shard_batch(alive, names=("activation_batch",))
        keys_d = parallel.shard_batch(keys_h, names=("activation_batch", None))
      else:
        tokens_d, mask_d, alive_d, keys_d = tokens, mask, alive, keys_h
      out_t, out_lp, n_out, hit, _ = prog(model.params, tokens_d, mask_d, keys_d, jnp.float32(max(temperature, 1e-6)),
                                          jnp.float32(top_p), stop_arr, alive_d)
      out_t, out_lp, n_out, hit = (parallel.to_host(a) for a in (out_t, out_lp, n_out, hit))
      for i, d in enumerate(chunk):
        rows = range(i * n, i * n + call.want[d])
        results[d] = (
          [out_t[r, : n_out[r]].tolist() for r in rows],
          [out_lp[r, : n_out[r]].tolist() for r in rows],
          [bool(hit[r]) for r in rows],
        )
  return call.output(*zip(*results, strict=True))
