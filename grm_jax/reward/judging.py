"""One reward request as the paper judges it, with no IO: plan the prompts, then turn the sampled texts into rewards.

`plan` splits a request's responses into the prompts the GRM sees (pointwise: each response alone; group: the
responses of one prompt together, in balanced chunks of at most `recipe.max_responses`), draws k shuffles per chunk
(paper §4: every sample sees its own order), and groups equal shuffles into one completion with n samples (their
prefix is shared). Every random choice comes from the request's seed, so the same request gives the same prompts and
completion seeds whoever sends it and whatever it is batched with.

`combine` reads each sample the template's way (`grm.parse`), maps it back to the original order, keeps the top
k_meta samples by meta score when there are meta scores, sums them (Voting@k, `grm.voting.vote`) and divides by the
number of samples that voted: a response's reward is its mean voted score, on the template's scale, so chunks and
requests with different k or failed samples stay comparable. A response whose chunk has no parsed sample gets
`recipe.neutral_reward`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from grm_jax.grm import parse, prompts, voting
from grm_jax.reward.recipe import Recipe

MODES = ("group", "pointwise")


@dataclasses.dataclass(frozen=True)
class Completion:
  """One distinct prompt to sample: the GRM's user turn, how many samples, and their seed."""

  content: str
  n: int
  seed: int


@dataclasses.dataclass(frozen=True)
class Chunk:
  """The responses one prompt shows (`indices`, original order) and its k samples: `perms[j]` is sample j's shown
  order (chunk positions), drawn by completion `owner[j]` as that completion's sample `rank[j]`."""

  indices: tuple[int, ...]
  template: str
  perms: tuple[tuple[int, ...], ...]
  completions: tuple[Completion, ...]
  owner: tuple[int, ...]
  rank: tuple[int, ...]


@dataclasses.dataclass
class RewardResult:
  """Rewards of one request, in the order of its responses, and how they came about.

  rewards: mean voted score per response (`neutral_reward` where its chunk has no parsed sample).
  votes: the Voting@k (or MetaRM@k) sum per response.
  parsed: how many of its chunk's k samples parsed; voted: how many of those were summed (k_meta with a meta RM).
  judgements: per chunk, each sample's text, shown order, scores in original order (None if unparseable) and meta
    score, when asked for.
  """

  rewards: list[float]
  votes: list[float]
  parsed: list[int]
  voted: list[int]
  judgements: list[dict[str, Any]] | None = None

  def to_dict(self) -> dict[str, Any]:
    out = {"rewards": self.rewards, "votes": self.votes, "parsed": self.parsed, "voted": self.voted}
    if self.judgements is not None:
      out["judgements"] = self.judgements
    return out


def check_request(recipe: Recipe, responses: Sequence[Any], k: int, mode: str, chunked: bool = True) -> None:
  """One-line errors for what a request can get wrong (the server answers them with 400)."""
  if mode not in MODES:
    raise ValueError(f"mode={mode!r}: choose one of {MODES}")
  if not isinstance(responses, Sequence) or isinstance(responses, str) or not responses:
    raise ValueError("responses: need a non-empty list of strings")
  if any(not isinstance(r, str) for r in responses):
    raise ValueError("responses: every response must be a string")
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r}: need an integer >= 1")
  if mode == "group" and not chunked and len(responses) > recipe.max_responses:
    raise ValueError(f"responses: {len(responses)} responses, more than the {recipe.max_responses} one GRM prompt "
                     "shows; use mode=pointwise or send at most that many")
  if recipe.template in prompts.JUDGE_TEMPLATES and (mode == "pointwise" or len(responses) < 2):
    raise ValueError(f"the {recipe.template!r} template picks the best of several responses: use mode=group with "
                     "at least 2 responses")


def chunks_of(count: int, mode: str, max_responses: int) -> list[list[int]]:
  """Response indices per prompt: one each (pointwise), or ceil(count / max) balanced consecutive chunks (group)."""
  if mode == "pointwise":
    return [[i] for i in range(count)]
  parts = math.ceil(count / max_responses)
  return [[int(i) for i in part] for part in np.array_split(np.arange(count), parts)]


def plan(recipe: Recipe, prompt: prompts.Query, responses: Sequence[str], *, k: int, mode: str = "group",
         seed: int = 0, shuffle: bool = True) -> list[Chunk]:
  """The chunks of one request and their completions (module docstring)."""
  check_request(recipe, responses, k, mode)
  out = []
  for c, indices in enumerate(chunks_of(len(responses), mode, recipe.max_responses)):
    n = len(indices)
    rng = np.random.default_rng([int(seed) % 2**63, c])
    perms = [tuple(int(i) for i in rng.permutation(n)) if shuffle else tuple(range(n)) for _ in range(k)]
    name, text = recipe.template_for(n)
    distinct = list(dict.fromkeys(perms))
    seeds = rng.integers(0, 2**32, size=len(distinct), dtype=np.uint64)
    owner = [distinct.index(p) for p in perms]
    rank = [owner[:j].count(owner[j]) for j in range(k)]
    shown = [[responses[indices[i]] for i in p] for p in distinct]
    completions = tuple(
      Completion(prompts.render_prompt(text, prompt, s, numbered=name != "single"), owner.count(d), int(seeds[d]))
      for d, s in enumerate(shown))
    out.append(Chunk(tuple(indices), name, tuple(perms), completions, tuple(owner), tuple(rank)))
  return out


def sample_texts(chunk: Chunk, outputs: Sequence[Sequence[str]]) -> list[str]:
  """The k sample texts of a chunk in sample order, from each completion's n outputs."""
  if len(outputs) != len(chunk.completions):
    raise ValueError(f"{len(outputs)} outputs for {len(chunk.completions)} completions")
  for d, (c, out) in enumerate(zip(chunk.completions, outputs, strict=True)):
    if len(out) != c.n:
      raise ValueError(f"completion {d}: {len(out)} samples, asked for {c.n}")
  return [outputs[d][r] for d, r in zip(chunk.owner, chunk.rank, strict=True)]


def meta_messages(recipe: Recipe, prompt: prompts.Query, responses: Sequence[str], chunk: Chunk,
                  texts: Sequence[str]) -> list[list[dict[str, str]]]:
  """The meta RM's input for each sample (paper §4): its template with the responses in the order that sample saw,
  then the judgement as the assistant turn (`grm.prompts.meta_prompt`)."""
  body = (recipe.meta.template_text if recipe.meta is not None else prompts.META_TEMPLATE.template)
  out = []
  for perm, text in zip(chunk.perms, texts, strict=True):
    shown = [responses[chunk.indices[i]] for i in perm]
    out.append([{"role": "user", "content": prompts.render_prompt(body, prompt, shown)},
                {"role": "assistant", "content": text}])
  return out


def combine(recipe: Recipe, num_responses: int, chunks: Sequence[Chunk], texts: Sequence[Sequence[str]],
            meta: Sequence[Sequence[float]] | None = None, k_meta: int | None = None,
            with_judgements: bool = False) -> RewardResult:
  """Rewards from each chunk's k sample texts (and meta scores): module docstring."""
  rewards = [recipe.neutral_reward] * num_responses
  votes = [0.0] * num_responses
  parsed = [0] * num_responses
  voted = [0] * num_responses
  judgements = [] if with_judgements else None
  for c, (chunk, chunk_texts) in enumerate(zip(chunks, texts, strict=True)):
    n, k = len(chunk.indices), len(chunk.perms)
    scores, valid, _, _ = parse.judge_texts_to_arrays([list(chunk_texts)], [list(chunk.perms)], n_max=n, k=k,
                                                      templates=[chunk.template])
    chunk_meta = None if meta is None else np.asarray(meta[c], np.float32).reshape(1, k)
    keep = valid if chunk_meta is None else voting.meta_keep(valid, chunk_meta, min(k_meta or recipe.k_meta
                                                                                      or voting.default_k_meta(k), k))
    total = np.asarray(voting.vote(scores.astype(np.float64), keep))[0]
    kept = int(keep.sum())
    for p, i in enumerate(chunk.indices):
      votes[i], parsed[i], voted[i] = float(total[p]), int(valid.sum()), kept
      if kept:
        rewards[i] = float(total[p]) / kept
    if judgements is not None:
      judgements.append({"responses": list(chunk.indices), "template": chunk.template, "samples": [
        {"text": chunk_texts[j], "order": list(chunk.perms[j]),
         "scores": scores[0, j].tolist() if valid[0, j] else None,
         "meta": None if chunk_meta is None else float(chunk_meta[0, j]), "voted": bool(keep[0, j])}
        for j in range(k)]})
  return RewardResult(rewards, votes, parsed, voted, judgements)


async def judge_request(recipe: Recipe, complete: Callable[[Completion], Awaitable[Sequence[str]]],
                        prompt: prompts.Query, responses: Sequence[str], *, k: int, mode: str = "group", seed: int = 0,
                        shuffle: bool = True,
                        meta: Callable[[list[list[dict[str, str]]]], Awaitable[Sequence[float]]] | None = None,
                        k_meta: int | None = None, with_judgements: bool = False) -> RewardResult:
  """One request end to end: `plan`, every completion at once through `complete` (the client's HTTP call or the
  server's engine), the meta RM's scores through `meta` when given, then `combine`."""
  chunks = plan(recipe, prompt, list(responses), k=k, mode=mode, seed=seed, shuffle=shuffle)
  outputs = await asyncio.gather(*(asyncio.gather(*(complete(c) for c in ch.completions)) for ch in chunks))
  texts = [sample_texts(ch, out) for ch, out in zip(chunks, outputs, strict=True)]
  scores = None
  if meta is not None:
    scores = await asyncio.gather(*(meta(meta_messages(recipe, prompt, responses, ch, t))
                                    for ch, t in zip(chunks, texts, strict=True)))
  return combine(recipe, len(responses), chunks, texts, scores, k_meta, with_judgements)
