"""The judge layer: PreferenceExamples -> k shuffled GRM prompts each -> sampled judgements -> score arrays.

This is the one place where the paper's inference-time sampling (§4) meets the model: every sample of an item
sees the responses in its own permutation (drawn from a seeded numpy Generator, so a run is reproducible), the
prompts are tokenized with the model's chat template, all samples are drawn by `sampling.generate`, and the
texts are parsed (`parse_judgement`: scores, or a judge template's chosen index as one-hot scores) and mapped back to
the original response order (`unpermute`). The arrays it returns are what `rules` (training) and `voting`
(inference) consume.

Prefix sharing: a permutation can repeat (always for n = 1, often for n = 2), giving identical prompts. Those
are grouped and sampled with `generate(n=m)`, so the prompt is prefilled once and its m samples decode
against one prefix slot; at temperature > 0 they are still independent samples. Greedy decoding (temperature 0)
sends every prompt with n = 1: `generate` collapses duplicates itself.

A judgement that cannot be parsed is marked invalid (scores 0) and counted; it never raises.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import tqdm

from grm_jax import files
from grm_jax.data.example import PreferenceExample
from grm_jax.grm.parse import judge_texts_to_arrays
from grm_jax.grm.prompts import grm_prompt
from grm_jax.judges.settings import Sampling

__all__ = ["Judgements", "judge", "judge_texts_to_arrays"]


@dataclasses.dataclass
class Judgements:
  """k sampled judgements for each of B items, in the original response order.

  Attributes:
    scores: int32 [B, k, n_max], original order; 0 where the sample is invalid or the response is padding.
    valid: bool [B, k], the sample's scores parsed (exactly n integers in its last score block).
    response_mask: bool [B, n_max], which response slots are real (item b has n_b responses).
    perms: int32 [B, k, n_max]; `perms[b, j, p]` is the original index shown as "Response p+1" in sample j,
      padded with the identity tail (n_b, ..., n_max - 1) so `voting.unpermute_batch` leaves padding in place.
    texts: texts[b][j], the decoded judgement (special tokens skipped).
    tokens: tokens[b][j], the generated token ids (stop token excluded), for training stages.
    logprobs: logprobs[b][j], their log-probs under the sampling distribution.
    prompt_ids: prompt_ids[b][j], the prompt token ids sample j was conditioned on.
    prompt_tokens: int32 [B, k], prompt length of each sample.
    generated_tokens: int32 [B, k], number of generated tokens of each sample.
    stopped: bool [B, k], True if the sample ended on a stop token (False: cut at max_new_tokens).
    templates: the template used per item (`prompts.TEMPLATES`; n = 1 items get the `single_template`).
    sampler_seconds: wall time spent inside `sampling.generate` (includes compilation on a first call).
    total_seconds: wall time of the whole `judge` call (tokenizing, sampling, decoding, parsing).
  """

  scores: np.ndarray
  valid: np.ndarray
  response_mask: np.ndarray
  perms: np.ndarray
  texts: list[list[str]]
  tokens: list[list[list[int]]]
  logprobs: list[list[list[float]]]
  prompt_ids: list[list[list[int]]]
  prompt_tokens: np.ndarray
  generated_tokens: np.ndarray
  stopped: np.ndarray
  templates: list[str]
  sampler_seconds: float = 0.0
  total_seconds: float = 0.0

  @property
  def num_items(self) -> int:
    return int(self.scores.shape[0])

  @property
  def k(self) -> int:
    return int(self.scores.shape[1])

  @property
  def num_invalid(self) -> int:
    """Samples whose scores could not be parsed."""
    return int(self.valid.size - self.valid.sum())

  @property
  def parse_failure_rate(self) -> float:
    return self.num_invalid / self.valid.size if self.valid.size else 0.0

  @property
  def items_per_second(self) -> float:
    """Items judged (k samples each) per second of sampler wall time."""
    return self.num_items / self.sampler_seconds if self.sampler_seconds > 0 else float("nan")

  @property
  def tokens_per_second(self) -> float:
    """Generated tokens per second of sampler wall time."""
    total = int(self.generated_tokens.sum())
    return total / self.sampler_seconds if self.sampler_seconds > 0 else float("nan")


def _sample_groups(prompt_ids: Sequence[tuple[int, ...]], greedy: bool) -> list[list[int]]:
  """Sample slots grouped by identical prompt (each group is sampled as one prompt with
  len(group) samples). Greedy decoding gives every slot its own group: the sampler
  deduplicates greedy prompts itself."""
  if greedy:
    return [[s] for s in range(len(prompt_ids))]
  by_prompt: dict[tuple[int, ...], list[int]] = {}
  for s, ids in enumerate(prompt_ids):
    by_prompt.setdefault(ids, []).append(s)
  return list(by_prompt.values())


def judge(
  model: Any,
  examples: Sequence[PreferenceExample],
  sampling: Sampling,
  *,
  hint: bool = False,
  shuffle: bool = True,
  progress: bool = True,
  stop_token_ids: Sequence[int] | None = None,
) -> Judgements:
  """Samples `sampling.k` judgements per example, each with its own shuffle of the responses (paper §4).

  Args:
    model: a `models.Model` (anything with `encode_chat`, `tokenizer.decode` and what `sampling.generate` needs).
    examples: the items; mixed n is fine (arrays are padded to the largest n).
    sampling: k, the sampler's settings, items per call, the seed (permutations drawn per item in order, so they do
      not depend on `batch_items`, and the sampler keys) and the templates (`Sampling`).
    hint: append "The best response is: Response j" naming the true best's shown position, to items with
      n >= 2 (RFT's hinted sampling, paper §3.2); an item with `metadata["strength"]` (HelpSteer2-Preference)
      also gets its labelled preference strength (`prompts.hint_suffix`). `prompt_ids` then hold the hinted
      prompts.
    shuffle: False shows every sample the original order (for debugging positional bias).
    progress: show a tqdm bar over items.
    stop_token_ids: passed to `sampling.generate` (default: the model's end-of-turn ids).
  """
  start = time.perf_counter()
  perm_seq, sampler_seq = np.random.SeedSequence(sampling.seed).spawn(2)
  templates = [sampling.single_template if ex.n == 1 else sampling.template for ex in examples]
  perms = _permutations(examples, sampling.k, np.random.default_rng(perm_seq) if shuffle else None)
  prompt_ids = [[_prompt_ids(model, ex, perm, template, hint) for perm in row]
                for ex, row, template in zip(examples, perms, templates, strict=True)]
  drawn = _sample(model, prompt_ids, sampling, np.random.default_rng(sampler_seq), stop_token_ids, progress)
  B, k = len(examples), sampling.k
  n_max = max((ex.n for ex in examples), default=1)
  scores, valid, mask, perm_arr = judge_texts_to_arrays(drawn.texts, perms, None, n_max, k, templates)
  return Judgements(
    scores=scores,
    valid=valid,
    response_mask=mask,
    perms=perm_arr,
    texts=drawn.texts,
    tokens=drawn.tokens,
    logprobs=drawn.logprobs,
    prompt_ids=prompt_ids,
    prompt_tokens=np.array([[len(p) for p in row] for row in prompt_ids], np.int32).reshape(B, k),
    generated_tokens=np.array([[len(t) for t in row] for row in drawn.tokens], np.int32).reshape(B, k),
    stopped=drawn.stopped,
    templates=templates,
    sampler_seconds=drawn.seconds,
    total_seconds=time.perf_counter() - start,
  )


def _permutations(examples: Sequence[PreferenceExample], k: int, rng: np.random.Generator | None,
                  ) -> list[list[tuple[int, ...]]]:
  """perms[b][j]: the response order sample j of item b shows, drawn per item in order (None: the original order)."""
  if rng is None:
    return [[tuple(range(ex.n))] * k for ex in examples]
  return [[tuple(int(i) for i in rng.permutation(ex.n)) for _ in range(k)] for ex in examples]


def _prompt_ids(model: Any, ex: PreferenceExample, perm: tuple[int, ...], template: str, hint: bool) -> list[int]:
  """The chat-templated prompt of one sample; with `hint`, naming the true best's shown position (n >= 2 only: a
  single response has no "best" to name) and, for HelpSteer2-Preference items, its labelled strength."""
  hint_best = int(np.argmax(ex.rewards)) if hint and ex.n > 1 else None
  strength = ex.metadata.get("strength") if hint_best is not None else None
  prompt = grm_prompt(list(ex.context), ex.responses, perm=perm, template=template, hint_best=hint_best,
                      hint_strength=strength)
  return [int(t) for t in model.encode_chat(prompt.messages)]


@dataclasses.dataclass
class _Drawn:
  """What the sampler returned, per item and sample."""

  texts: list[list[str]]
  tokens: list[list[list[int]]]
  logprobs: list[list[list[float]]]
  stopped: np.ndarray
  seconds: float


def _sample(model: Any, prompt_ids: list[list[list[int]]], sampling: Sampling, rng: np.random.Generator,
            stop_token_ids: Sequence[int] | None, progress: bool) -> _Drawn:
  """Every sample of every item, `sampling.batch_items` items per `sampling.generate` call.

  Calls take items in order of prompt length: the engine buckets prompts by length, so a call mixing a 900- and a
  3,000-token item would prefill the first at the second's bucket. Within a call each distinct prompt is sent once
  with as many samples as slots show it (its prefix is shared).
  """
  from grm_jax import sampling as sampler  # noqa: PLC0415 - the sampler's jax programs load on the first judge call

  B, k = len(prompt_ids), sampling.k
  drawn = _Drawn(texts=[[""] * k for _ in range(B)], tokens=[[[] for _ in range(k)] for _ in range(B)],
                 logprobs=[[[] for _ in range(k)] for _ in range(B)], stopped=np.zeros((B, k), bool), seconds=0.0)
  order = sorted(range(B), key=lambda b: max((len(p) for p in prompt_ids[b]), default=0))
  bar = tqdm.tqdm(total=B, desc=f"judge k={k}", unit="item", disable=not progress or not files.is_writer(),
                  leave=False)
  per_call = sampling.items_per_call(B)
  for b0 in range(0, B, per_call):
    items = order[b0 : b0 + per_call]
    slots = [(b, j) for b in items for j in range(k)]
    ids = [tuple(prompt_ids[b][j]) for b, j in slots]
    groups = _sample_groups(ids, sampling.temperature == 0)
    call_seed = int(rng.integers(2**31 - 1))
    t0 = time.perf_counter()
    out = sampler.generate(model, [list(ids[g[0]]) for g in groups], n=[len(g) for g in groups],
                           max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p, top_k=sampling.top_k, seed=call_seed, stop_token_ids=stop_token_ids)
    drawn.seconds += time.perf_counter() - t0
    for g, group in enumerate(groups):
      for r, s in enumerate(group):
        b, j = slots[s]
        drawn.tokens[b][j] = list(out.tokens[g][r])
        drawn.logprobs[b][j] = list(out.logprobs[g][r])
        drawn.stopped[b, j] = bool(out.stopped[g][r])
        drawn.texts[b][j] = model.tokenizer.decode(drawn.tokens[b][j], skip_special_tokens=True)
    bar.update(len(items))
  bar.close()
  return drawn
