"""`generate`: one jitted program per shape bucket — prefill once, then decode in a while_loop.

For each call the host left-pads the distinct prompts into a [P, Lp] block (Lp and P rounded
up to buckets so repeated calls reuse the compiled program). On device:
  1. prefill the P prompts once into a prefix KV cache of Lp slots;
  2. give each of the rows = P * n samples its own cache of max_new_tokens slots only: the n
     rows of a prompt read its prefix cache once per step, as one batched dot (decoder.Attention),
     so the prefix is neither recomputed nor copied nor re-read n times;
  3. decode inside one `lax.while_loop` that stops as soon as every row hit a stop token.
Text never enters the device program; outputs come back as token ids and log-probs.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import parallel
from grm_jax.models import weights
from grm_jax.models.decoder import Decoder, LayerCaches, decode_step, default_positions, split_layer_params
from grm_jax.models.model import Model
from grm_jax.sampling.filters import sample_token


@dataclasses.dataclass
class GenerateOutput:
  """tokens[i][j]: ids generated for prompt i, sample j (stop token excluded);
  logprobs[i][j]: their log-probs under the sampling distribution;
  stopped[i][j]: True if the sample ended on a stop token (False: hit max_new_tokens)."""

  tokens: list[list[list[int]]]
  logprobs: list[list[list[float]]]
  stopped: list[list[bool]]

  def num_tokens(self) -> int:
    return sum(len(t) for row in self.tokens for t in row)


MAX_PROMPTS_PER_CALL = 64  # distinct prompts per compiled call (bounds the prefix cache and host arrays)


def length_bucket(n: int, minimum: int = 16) -> int:
  """Prompt-length bucket: powers of two up to 64, then multiples of 64 up to 1,024, then of
  256. Prefill cost is linear in the padded length, so fine buckets (<= ~20% padding past 64
  tokens) are worth the few extra compiled programs."""
  n = max(n, minimum)
  if n <= 64:
    return 1 << (n - 1).bit_length()
  step = 64 if n <= 1024 else 256
  return -(-n // step) * step


def batch_bucket(n: int, multiple: int = 1) -> int:
  b = 1 << max(n - 1, 0).bit_length()
  return math.lcm(b, multiple) if b % multiple else b


@functools.lru_cache(maxsize=16)
def sampling_shardings(cfg, mesh, rules):
  """Where the sampler keeps the weights: split over `tensor` as the rules say, but whole on every data / fsdp
  shard. Training shards weights over fsdp too; read that way, every decode step would all-gather every weight
  (fsdp x the bytes it must read). The sampler reshards once per call instead."""
  shapes, names = weights.abstract_params(cfg)
  return parallel.tree_shardings(names, shapes, mesh, parallel.override(rules, embed=None))


def sampling_params(cfg, params, mesh, rules):
  """Params as the sampler's loop reads them (inside its jit): compute dtype (`weights.for_compute`) and
  `sampling_shardings`. On one device with f32 compute this is the params themselves."""
  params = weights.for_compute(cfg, params)
  if mesh is None:
    return params
  return jax.tree.map(jax.lax.with_sharding_constraint, params, sampling_shardings(cfg, mesh, rules))


def _one_step(cfg, mesh, rules, params, layer_params, tok, pos, cache):
  """One decode step of every row: the while loop's model call (`decode_program` compiles it alone)."""
  rows = tok.shape[0]
  return decode_step(cfg, params, layer_params, tok[:, None], pos[:, None], jnp.ones((rows, 1), bool), cache, mesh,
                     rules)


def decode_program(cfg, mesh, rules):
  """jit(step)(params, layer_params, tok [R], pos [R], cache) -> (logits [R, 1, V], cache): the loop body's model
  call as its own program, with the per-layer params the loop reads (split once, outside the loop). The loop has no
  other per-step work on weights or cache, so this is what a decode step moves and computes (grm_jax.aot). The
  cache is donated: the loop updates it in place, and an undonated program would copy it whole every step."""
  return jax.jit(functools.partial(_one_step, cfg, mesh, rules if mesh is not None else ()), donate_argnums=(4,))


def call_shape(num_prompts: int, n: int, longest_prompt: int, mesh) -> tuple[int, int]:
  """(prompt rows, padded prompt length) of one sampler call: prompts rounded up to a power of two (and to the
  data x fsdp shards when needed), the length to its bucket. One place, so `generate` and grm_jax.aot agree."""
  shard_mult = 1 if mesh is None else math.prod(mesh.shape[a] for a in ("data", "fsdp"))
  batch = batch_bucket(num_prompts, shard_mult if n == 1 else 1)
  if mesh is not None and (batch * n) % shard_mult:
    batch = math.lcm(batch, shard_mult)
  return batch, length_bucket(longest_prompt)


@functools.lru_cache(maxsize=64)
def sampler_program(cfg, mesh, rules, batch, prompt_len, n, max_new, top_k, use_top_p, greedy, num_stop):
  """The jitted sampler for one call shape: jit(run)(params, tokens [batch, prompt_len], mask, row_keys
  [batch * n, 2] (uint32 key data, `row_keys`), temperature, top_p, stop_ids [num_stop], alive [batch * n]) ->
  (tokens, log-probs, lengths, stopped, steps)."""
  module = Decoder(cfg, mesh, rules if mesh is not None else ())
  rows = batch * n

  def constrain(x, names):
    return parallel.constrain(x, names, mesh, rules)

  def run(params, tokens, mask, row_keys, temperature, top_p, stop_ids, alive):
    params = sampling_params(cfg, params, mesh, rules)
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
      logits, cache = _one_step(cfg, mesh, rules, params, layer_params, tok, lengths + step - 1, cache)
      tok, logp = pick(step, logits[:, 0])
      done, out_t, out_lp, n_out, now = record(step, tok, logp, done, out_t, out_lp, n_out)
      return step + 1, tok, cache, done, out_t, out_lp, n_out, hit | now

    state = jax.lax.while_loop(cond, body, state)
    return state[4], state[5], state[6], state[7], state[0]

  return jax.jit(run)


@jax.jit
def _row_key_data(seeds, salts, samples):
  """uint32 key data [R, 2]: row r's stream is fold_in(fold_in(key(seeds[r]), salts[r]), samples[r])."""

  def one(seed, salt, sample):
    return jax.random.key_data(jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), salt), sample))

  return jax.vmap(one)(seeds, salts, samples)


def row_keys(seeds: Sequence[int], salts: Sequence[int], n: int) -> np.ndarray:
  """uint32 [len(seeds) * n, 2]: the key of sample j of prompt i is a function of (seeds[i], salts[i], j) alone.

  So a prompt's samples never depend on what else shares its call, where it sits in the batch, the bucket sizes or
  `max_prompts_per_call`: a server can merge requests, and a stage can change its batch size, without changing
  anyone's samples. `generate` passes (seed, position in `prompts`) for one seed, or (seeds[i], 0) for per-prompt
  seeds."""
  seeds = np.repeat(np.asarray(seeds, np.uint32), n)
  salts = np.repeat(np.asarray(salts, np.uint32), n)
  samples = np.tile(np.arange(n, dtype=np.uint32), len(seeds) // max(n, 1))
  return np.asarray(_row_key_data(seeds, salts, samples))


def _validate(model: Model, prompts, n, max_new_tokens, temperature, top_p, top_k) -> None:
  if not isinstance(prompts, Sequence) or isinstance(prompts, str | bytes):
    raise TypeError("generate: prompts must be a list of token-id lists (tokenize text with model.encode_chat)")
  vocab = model.config.vocab_size
  for i, p in enumerate(prompts):
    if len(p) == 0:
      raise ValueError(f"generate: prompts[{i}] is empty; every prompt needs at least one token")
    lo, hi = min(p), max(p)
    if lo < 0 or hi >= vocab:
      raise ValueError(f"generate: prompts[{i}] has token id {lo if lo < 0 else hi} outside [0, {vocab})")
  if n < 1:
    raise ValueError(f"generate: n={n}; need n >= 1 samples per prompt")
  if max_new_tokens < 1:
    raise ValueError(f"generate: max_new_tokens={max_new_tokens}; need >= 1")
  if temperature < 0:
    raise ValueError(f"generate: temperature={temperature}; need >= 0 (0 = greedy)")
  if not 0 < top_p <= 1:
    raise ValueError(f"generate: top_p={top_p}; need 0 < top_p <= 1")
  if top_k < 0:
    raise ValueError(f"generate: top_k={top_k}; need >= 0 (0 = off)")
  longest = max(len(p) for p in prompts) + max_new_tokens
  if longest > model.config.max_position_embeddings:
    raise ValueError(
      f"generate: longest prompt + max_new_tokens = {longest} exceeds the model's "
      f"max_position_embeddings={model.config.max_position_embeddings}"
    )


def generate(
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
  """Sample n continuations of each prompt (token-id lists); the public API of grm_jax.sampling.

  `n` may be a list with one count per prompt: all prompts then share one program and one
  decode loop with max(n) rows per prompt, the unused rows finished from the start (the judge
  uses this when shuffled prompts repeat a different number of times).

  `seed` is one seed for the call, or one per prompt (a server's requests, each with its own seed). Either way a
  prompt's samples depend only on its seed, its position in `prompts` (one seed) and the sample index (`row_keys`),
  never on batching.

  stop_token_ids default to the model's EOS ids; pass [] to disable stopping.
  Prompts are processed in chunks of `max_prompts_per_call` distinct prompts; identical
  prompts are prefilled once when decoding is greedy. Sampled duplicates each get their own,
  independent samples (e.g. voting over prompts whose shuffled responses happen to coincide).
  """
  if not prompts:
    return GenerateOutput([], [], [])
  counts = [int(n)] * len(prompts) if isinstance(n, int | np.integer) else [int(c) for c in n]
  if len(counts) != len(prompts):
    raise ValueError(f"generate: n has {len(counts)} counts for {len(prompts)} prompts")
  _validate(model, prompts, min(counts), max_new_tokens, temperature, top_p, top_k)
  if isinstance(seed, int | np.integer):
    seeds, salts = [int(seed)] * len(prompts), list(range(len(prompts)))
  else:
    seeds, salts = [int(s) for s in seed], [0] * len(prompts)
    if len(seeds) != len(prompts):
      raise ValueError(f"generate: seed has {len(seeds)} values for {len(prompts)} prompts")
  if any(not 0 <= s < 2**32 for s in seeds):
    raise ValueError("generate: seeds must be in [0, 2**32)")
  n = max(counts)
  stops = list(model.eos_ids if stop_token_ids is None else stop_token_ids)
  greedy = temperature == 0
  use_top_p = top_p < 1.0

  # Greedy: distinct prompts only, results fanned back out to every duplicate. Sampling: the
  # position in `prompts` is part of the key, so duplicates are not collapsed.
  keys = [(tuple(int(t) for t in p), 0 if greedy else i) for i, p in enumerate(prompts)]
  first = {}  # each distinct prompt's first position: its seed and salt
  for i, key_ in enumerate(keys):
    first.setdefault(key_, i)
  distinct = list(dict.fromkeys(keys))
  want: dict[tuple[tuple[int, ...], int], int] = {}
  for key_, c in zip(keys, counts, strict=True):
    want[key_] = max(c, want.get(key_, 0))
  results: dict[tuple[tuple[int, ...], int], Any] = {}
  stop_arr = np.full((max(1, len(stops)),), -1, np.int32)
  stop_arr[: len(stops)] = stops
  for c in range(0, len(distinct), max_prompts_per_call):
    chunk = distinct[c : c + max_prompts_per_call]
    batch, plen = call_shape(len(chunk), n, max(len(p) for p, _ in chunk), model.mesh)
    tokens = np.full((batch, plen), model.pad_id, np.int32)
    mask = np.zeros((batch, plen), bool)
    alive = np.zeros((batch, n), bool)
    call_seeds, call_salts = np.zeros(batch, np.int64), np.zeros(batch, np.int64)
    for i, (p, _) in enumerate(chunk):
      call_seeds[i], call_salts[i] = seeds[first[chunk[i]]], salts[first[chunk[i]]]
      tokens[i, plen - len(p) :] = p
      mask[i, plen - len(p) :] = True
      alive[i, : want[chunk[i]]] = True
    rules = tuple(model.rules)
    prog = sampler_program(
      model.config, model.mesh, rules, batch, plen, n, max_new_tokens, top_k, use_top_p, greedy, len(stop_arr)
    )
    alive = alive.reshape(-1)
    keys_h = row_keys(call_seeds, call_salts, n)
    if model.mesh is not None:
      tokens_d = parallel.shard_batch(tokens, model.mesh, rules)
      mask_d = parallel.shard_batch(mask, model.mesh, rules)
      alive_d = parallel.shard_batch(alive, model.mesh, rules, names=("activation_batch",))
      keys_d = parallel.shard_batch(keys_h, model.mesh, rules, names=("activation_batch", None))
    else:
      tokens_d, mask_d, alive_d, keys_d = tokens, mask, alive, keys_h
    out_t, out_lp, n_out, hit, _ = prog(
      model.params, tokens_d, mask_d, keys_d, jnp.float32(max(temperature, 1e-6)), jnp.float32(top_p), stop_arr, alive_d
    )
    out_t, out_lp, n_out, hit = (parallel.to_host(a) for a in (out_t, out_lp, n_out, hit))
    for i, k in enumerate(chunk):
      rows = range(i * n, i * n + want[k])
      results[k] = (
        [out_t[r, : n_out[r]].tolist() for r in rows],
        [out_lp[r, : n_out[r]].tolist() for r in rows],
        [bool(hit[r]) for r in rows],
      )
  return GenerateOutput(  # copies: duplicates must not share mutable lists
    tokens=[[list(t) for t in results[k][0][:c]] for k, c in zip(keys, counts, strict=True)],
    logprobs=[[list(lp) for lp in results[k][1][:c]] for k, c in zip(keys, counts, strict=True)],
    stopped=[list(results[k][2][:c]) for k, c in zip(keys, counts, strict=True)],
  )
