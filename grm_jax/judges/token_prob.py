"""The probability a judge gave its own choice: the weight of a vote in "LLM-as-a-Judge w/ TokenProb" (paper §4,
Tables 3/6).

The paper weights each LLM-as-a-Judge vote by "the probability of the preference token" and says no more. Ours, to
make that a number: the model's probability at temperature 1 of the index token(s) it generated inside the final
`\\boxed{...}` of its judgement (the one `parse.parse_choice` reads), given the prompt and everything it generated
before. Temperature 1, not the sampling temperature: the weight is the model's own confidence, the same whatever
temperature drew the sample. The token(s) are found in the sample's generated ids (`Judgements.tokens`) by decoding
prefixes; an index spread over several tokens (a two-digit index, or a tokenizer that splits it) gets the product of
their probabilities, i.e. the probability of the whole index string; a token that also holds neighbouring characters
("{2") is taken whole, since that is the token the model chose. The probabilities come from one teacher-forced forward
of prompt + generated tokens (`train.logprobs.token_logprobs`), batched over samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from grm_jax import parallel
from grm_jax.grm.parse import choice_span
from grm_jax.grm.prompts import JUDGE_TEMPLATES
from grm_jax.judges.model_judge import Judgements
from grm_jax.train.batching import pad_rows
from grm_jax.train.logprobs import token_logprobs


def _decoded_length(tokenizer: Any, tokens: Sequence[int], i: int) -> int:
  return len(tokenizer.decode(list(tokens[:i]), skip_special_tokens=True))


def index_token_span(tokenizer: Any, tokens: Sequence[int], n: int) -> tuple[int, int] | None:
  """[first, end) positions in the generated ids `tokens` of the tokens that spell the judge's chosen index (the
  integer in the last score block, 1..n), or None when the judgement does not parse as a choice or the digits cannot
  be matched to whole tokens.

  The decoded text of a prefix of the ids is a prefix of the text (byte-level and SentencePiece tokenizers alike, up
  to a partly decoded character at the cut), so two binary searches over prefix lengths find the first token whose
  text reaches past the index's first digit and the first one that completes its last digit: O(log L) decodes.
  """
  tokens = [int(t) for t in tokens]
  text = tokenizer.decode(tokens, skip_special_tokens=True)
  span = choice_span(text, n)
  if span is None:
    return None
  start, end = span

  def first_reaching(chars: int) -> int:
    """The smallest i with len(decode(tokens[: i + 1])) >= chars."""
    lo, hi = 0, len(tokens) - 1
    while lo < hi:
      mid = (lo + hi) // 2
      if _decoded_length(tokenizer, tokens, mid + 1) >= chars:
        hi = mid
      else:
        lo = mid + 1
    return lo

  first = first_reaching(start + 1)
  last = first_reaching(end)
  prefix = tokenizer.decode(tokens[: last + 1], skip_special_tokens=True)
  # The found tokens must really spell the digits where the full text has them (a tokenizer whose prefixes do not
  # decode to prefixes of the text would fail this rather than give a wrong token).
  if prefix[start:end] != text[start:end] or _decoded_length(tokenizer, tokens, first) > start:
    return None
  return first, last + 1


@parallel.per_mesh(maxsize=8)
def _logprob_program(cfg):
  """jit(params, tokens [B, T], mask) -> float32 [B, T]: log p(token t | tokens before it) at temperature 1."""
  return jax.jit(lambda p, t, m: token_logprobs(cfg, p, t, m, 1.0)[0])


def choice_probs(model: Any, j: Judgements, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
  """(probs float32 [B, k], located bool [B, k]): the probability each valid judge-template sample gave its chosen
  index (see the module docstring), and whether its index tokens were found. Samples that are invalid, not judged
  with a judge template, or whose index tokens were not found get probability 0 (their vote carries no weight) and
  located False.

  `model` must be the one that generated `j` (its params and tokenizer), `j` must hold the generated ids and prompts
  (`judges.judge` output; the synthetic critic's judgements have none).
  """
  B, k = j.valid.shape
  probs = np.zeros((B, k), np.float32)
  located = np.zeros((B, k), bool)
  seqs, spans, slots = [], [], []
  for b in range(B):
    if j.templates[b] not in JUDGE_TEMPLATES:
      continue
    n = int(np.asarray(j.response_mask[b]).sum())
    for s in range(k):
      if not j.valid[b, s] or not j.tokens[b][s]:
        continue
      span = index_token_span(model.tokenizer, j.tokens[b][s], n)
      if span is None:
        continue
      prompt = [int(t) for t in j.prompt_ids[b][s]]
      seqs.append(prompt + [int(t) for t in j.tokens[b][s]])
      spans.append((len(prompt) + span[0], len(prompt) + span[1]))
      slots.append((b, s))
  if not seqs:
    return probs, located
  with model.scope():  # the model's own mesh
    fn = _logprob_program(model.config)
    multiple = parallel.batch_shards()
    step = -(-int(batch_size) // multiple) * multiple
    order = np.argsort([len(x) for x in seqs], kind="stable")  # similar lengths share a batch: less padding
    for b0 in range(0, len(order), step):
      idx = order[b0 : b0 + step]
      tokens, mask = pad_rows([seqs[i] for i in idx], model.pad_id, step, 1 << 30)
      if model.mesh is None:
        logp = fn(model.params, tokens, mask)
      else:
        logp = fn(model.params, parallel.shard_batch(tokens), parallel.shard_batch(mask))
      logp = np.asarray(parallel.to_host(logp), np.float64)
      for row, i in enumerate(idx):
        first, end = spans[i]
        b, s = slots[i]
        probs[b, s] = float(np.exp(logp[row, first:end].sum()))  # product of the index tokens' probabilities
        located[b, s] = True
  return probs, located
