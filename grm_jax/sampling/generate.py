"""`generate`: the public sampler. Every prompt becomes a request on the continuous-batching engine
(`sampling.engine`): a fixed set of row slots, each refilled as soon as its sample ends, the n samples of a prompt
sharing its prefix KV. Text never enters the device; outputs come back as token ids and log-probs.

`sampling.static` keeps the earlier sampler (one while_loop per call, running until its longest row stops): the
baseline `benchmarks/continuous.py` measures against, and the reference the engine's tests compare with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from grm_jax import parallel
from grm_jax.buckets import batch_bucket, length_bucket
from grm_jax.models.model import Model
from grm_jax.sampling.engine import Engine, Request, choose_layout
from grm_jax.sampling.keys import row_keys
from grm_jax.sampling.params import sampling_params, sampling_shardings

__all__ = ["GenerateOutput", "batch_bucket", "generate", "length_bucket", "row_keys", "sampling_params",
           "sampling_shardings"]

MAX_ROWS = 64  # row slots of a generate call's engine (fewer when fewer samples are asked for)


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



@dataclasses.dataclass
class Call:
  """A `generate` call's arguments, checked and reduced to distinct prompts (greedy: identical prompts share one
  request; sampled: each position is its own, its key differing by salt). `first[i]` is the distinct prompt of
  position i; `want[d]` its sample count (the most any of its positions asks for)."""

  prompts: list[tuple[int, ...]]
  seeds: list[int]
  salts: list[int]
  want: list[int]
  counts: list[int]
  first: list[int]
  stops: list[int]

  def output(self, tokens, logprobs, stopped) -> GenerateOutput:
    """Per-distinct results fanned out to every position, cut to its own count (copies: no shared lists)."""
    pick = list(zip(self.first, self.counts, strict=True))
    return GenerateOutput(
      tokens=[[list(t) for t in tokens[d][:c]] for d, c in pick],
      logprobs=[[list(lp) for lp in logprobs[d][:c]] for d, c in pick],
      stopped=[list(stopped[d][:c]) for d, c in pick],
    )


def prepare(model: Model, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, stop_token_ids) -> Call:
  counts = [int(n)] * len(prompts) if isinstance(n, int | np.integer) else [int(c) for c in n]
  if len(counts) != len(prompts):
    raise ValueError(f"generate: n has {len(counts)} counts for {len(prompts)} prompts")
  validate(model, prompts, min(counts), max_new_tokens, temperature, top_p, top_k)
  if isinstance(seed, int | np.integer):
    seeds, salts = [int(seed)] * len(prompts), list(range(len(prompts)))
  else:
    seeds, salts = [int(s) for s in seed], [0] * len(prompts)
    if len(seeds) != len(prompts):
      raise ValueError(f"generate: seed has {len(seeds)} values for {len(prompts)} prompts")
  if any(not 0 <= s < 2**32 for s in seeds):
    raise ValueError("generate: seeds must be in [0, 2**32)")
  stops = list(model.eos_ids if stop_token_ids is None else stop_token_ids)
  greedy = temperature == 0
  index: dict[tuple[tuple[int, ...], int], int] = {}
  call = Call([], [], [], [], counts, [], stops)
  for i, p in enumerate(prompts):
    key = (tuple(int(t) for t in p), 0 if greedy else i)
    if key not in index:
      index[key] = len(call.prompts)
      call.prompts.append(key[0])
      call.seeds.append(seeds[i])
      call.salts.append(salts[i])
      call.want.append(0)
    d = index[key]
    call.first.append(d)
    call.want[d] = max(call.want[d], counts[i])
  return call


def validate(model: Model, prompts, n, max_new_tokens, temperature, top_p, top_k) -> None:
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
  max_rows: int = MAX_ROWS,
) -> GenerateOutput:
  """Sample n continuations of each prompt (token-id lists); the public API of grm_jax.sampling.

  `n` may be a list with one count per prompt. `seed` is one seed for the call, or one per prompt (a server's
  requests, each with its own seed). Either way sample j of a prompt depends only on its seed, its position in
  `prompts` (one seed) and j (`keys.row_keys`), never on batching, `max_rows` or the other prompts.

  stop_token_ids default to the model's EOS ids; pass [] to disable stopping. Identical prompts share one request
  when decoding is greedy; sampled duplicates each get their own, independent samples. The engine has at most
  `max_rows` row slots, `choose_layout` picks how many rows share a prefix.
  """
  if not prompts:
    return GenerateOutput([], [], [])
  if max_rows < 1:
    raise ValueError(f"generate: max_rows={max_rows}; need >= 1")
  call = prepare(model, prompts, n, max_new_tokens, temperature, top_p, top_k, seed, stop_token_ids)
  with model.scope():  # the model's own mesh, whatever the caller's scope
    layout = choose_layout(call.want, max(len(p) for p in call.prompts), max_new_tokens, len(call.stops), max_rows,
                           parallel.batch_shards())
    engine = Engine(model, layout)
    requests = [
      engine.submit(Request(list(p), want, max_new_tokens, temperature, top_p, top_k, tuple(call.stops), seed_, salt))
      for p, want, seed_, salt in zip(call.prompts, call.want, call.seeds, call.salts, strict=True)
    ]
    engine.run()
  return call.output([r.tokens for r in requests], [r.logprobs for r in requests], [r.stopped for r in requests])
