"""Reading scores out of a GRM judgement (the paper's output format), and undoing the response shuffle.

The rule, chosen to be strict enough for training and forgiving of harmless formatting:
- A score block is `\\boxed{...}` (one or two backslashes, as models write it raw or JSON-escaped) or `[[...]]`
  (the form in the paper's Figs. 2-3). The **last** block in the text wins, even if it is garbage: a model that
  revises its scores means the final ones, and falling back to an earlier block would reward rambling.
- Inside, comma-separated integers (ASCII or full-width commas), any whitespace, an optional trailing period
  (`\\boxed{7, 4.}`), and integral decimals such as `7.0`. Anything else in any part (`Response 1: 7`,
  `7/10`, `7.5`, `x`, an empty part) makes the block unparseable. The "official" downstream parser casts parts
  to float and silently drops the ones that fail; we refuse instead, because dropping a part shifts the
  scores onto the wrong responses. Labels are not accepted: the template asks for bare scores in order.
- Exactly `n` scores, else unparseable. With `clip` (the default) values are clipped to [lo, hi]: the model-card
  example clips the 1-10 templates to [1, 10]. The single-response 0/1 template is parsed with `clip=False`
  (`prompts.CLIP_RANGES`): Eq. 10/11 for n = 1 (paper §3.2) compare the raw S_1 with r_1, so `\\boxed{7}` on a
  correct response must stay 7 (wrong), not become a clipped 1 (right).
Single square brackets are deliberately *not* score blocks: the prompt's own `[The End of Response 2]` markers
would match them.

The LLM-as-a-Judge templates (`prompts.JUDGE_TEMPLATES`) ask for the index of the best response, `\\boxed{x}`: the
last block must hold exactly one integer x in 1..n (same formatting rule as above), the *shown* index of the chosen
response (`parse_choice`); anything else (0, n + 1, two numbers, a word) is unparseable. `parse_judgement` turns the
choice into one-hot scores in shown order, so every consumer of scores (unpermute, Eq. 10, voting) reads a judge's
output unchanged; the template decides which reading applies.

Unparseable judgements return None; callers count them and score them -1 (rules.py), never crash.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from grm_jax.grm.prompts import CLIP_RANGES, JUDGE_TEMPLATES, SCORE_RANGES

DEFAULT_RANGE = CLIP_RANGES["default"]
_INT32 = np.iinfo(np.int32)

BLOCK_PATTERN = r"\\{1,2}boxed\{([^{}]*)\}|\[\[([^\[\]]*)\]\]"
"""A score block (module docstring): the last match in a judgement holds its scores (`find_score_block`)."""
_BLOCK = re.compile(BLOCK_PATTERN)
_INTEGER = re.compile(r"[+-]?\d+(?:\.0*)?")
_SECTION = re.compile(r"^[ \t#*]*(Specific Criteria|Analysis|Scores)[ \t*]*:", re.MULTILINE)


def _last_block(text: str) -> re.Match | None:
  matches = list(_BLOCK.finditer(text))
  return matches[-1] if matches else None


def find_score_block(text: str) -> str | None:
  """Contents of the last `\\boxed{...}` or `[[...]]` in `text`, or None if there is none."""
  last = _last_block(text)
  if last is None:
    return None
  return last.group(1) if last.group(1) is not None else last.group(2)


def parse_scores(text: str, n: int, lo: int = 1, hi: int = 10, *, clip: bool = True) -> list[int] | None:
  """The n integer scores of a judgement in *shown* order, clipped to [lo, hi] unless `clip` is False (then
  returned as written); None if unparseable."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  if lo > hi:
    raise ValueError(f"empty score range [{lo}, {hi}]")
  if not isinstance(text, str):
    return None
  block = find_score_block(text)
  if block is None:
    return None
  body = block.replace("，", ",").strip()
  if body.endswith("."):
    body = body[:-1]
  parts = [p.strip() for p in body.split(",")]
  if len(parts) != n or not all(_INTEGER.fullmatch(p) for p in parts):
    return None
  try:
    # Not int(float(p)): a long digit string is inf as a float and int(inf) raises.
    values = [int(p.split(".", 1)[0]) for p in parts]
  except ValueError:  # more digits than Python converts
    return None
  return [min(max(v, lo), hi) for v in values] if clip else values


def choice_span(text: str, n: int) -> tuple[int, int] | None:
  """(start, end) character span in `text` of the digits of a judge's chosen index (the one integer in the last score
  block, 1..n), or None if the judgement does not parse as a choice. TokenProb voting reads the probability of the
  tokens over this span (`grm.token_prob`)."""
  if n < 1:
    raise ValueError(f"n must be >= 1, got {n}")
  if not isinstance(text, str):
    return None
  last = _last_block(text)
  if last is None:
    return None
  group = 1 if last.group(1) is not None else 2
  body = last.group(group).replace("，", ",")
  stripped = body.strip()
  if stripped.endswith("."):
    stripped = stripped[:-1].strip()
  if not _INTEGER.fullmatch(stripped):
    return None
  digits = re.search(r"\d+", body)  # the integer part; a sign or ".0" is not part of the index's tokens
  try:
    value = int(digits.group(0))
  except ValueError:  # more digits than Python converts
    return None
  if stripped.startswith("-") or not 1 <= value <= n:
    return None
  start = last.start(group) + digits.start()
  return start, start + len(digits.group(0))


def parse_choice(text: str, n: int) -> int | None:
  """The 1-based *shown* index of the response a judge chose (`\\boxed{x}`, x in 1..n), or None if unparseable."""
  span = choice_span(text, n)
  return None if span is None else int(text[span[0] : span[1]])


def parse_judgement(text: str, n: int, template: str = "default") -> list[int] | None:
  """A judgement's scores in *shown* order, read the way `template` asks: n scores (`parse_scores`, clipped as
  `prompts.CLIP_RANGES` says) or, for a judge template, the choice as one-hot scores (1 for the chosen response, 0 for
  the others). None if unparseable."""
  if template not in SCORE_RANGES:
    raise ValueError(f"unknown template {template!r}; expected one of {tuple(SCORE_RANGES)}")
  if template in JUDGE_TEMPLATES:
    choice = parse_choice(text, n)
    return None if choice is None else [int(p == choice - 1) for p in range(n)]
  clip = CLIP_RANGES[template]
  lo, hi = clip if clip is not None else SCORE_RANGES[template]
  return parse_scores(text, n, lo, hi, clip=clip is not None)


def unpermute(scores: Sequence[int] | None, perm: Sequence[int]) -> list[int] | None:
  """Map scores from shown order back to original order: `out[perm[p]] = scores[p]`. None stays None."""
  if scores is None:
    return None
  if len(scores) != len(perm):
    raise ValueError(f"{len(scores)} scores for a permutation of {len(perm)}")
  out = [0] * len(perm)
  for p, i in enumerate(perm):
    out[i] = scores[p]
  return out


def stack_scores(parsed: Sequence[Sequence[int] | None], n_max: int) -> tuple[np.ndarray, np.ndarray]:
  """Pack parsed judgements into arrays for rules/voting: (scores int32 [N, n_max], valid bool [N]).

  Unparseable entries and padding columns hold 0; `valid` (and the caller's response mask) say what is real.
  """
  scores = np.zeros((len(parsed), n_max), np.int32)
  valid = np.zeros((len(parsed),), bool)
  for r, s in enumerate(parsed):
    if s is None:
      continue
    if len(s) > n_max:
      raise ValueError(f"entry {r} has {len(s)} scores, more than n_max={n_max}")
    scores[r, : len(s)] = s
    valid[r] = True
  return scores, valid


def judge_texts_to_arrays(
  texts: Sequence[Sequence[str]],
  perms: Sequence[Sequence[Sequence[int]]],
  ranges: Sequence[tuple[int, int] | None] | None = None,
  n_max: int | None = None,
  k: int | None = None,
  templates: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Judgement texts in shown order -> (scores [B,k,n_max], valid [B,k], response_mask [B,n_max], perms).

  `texts[b][j]` is sample j of item b, written for a prompt that showed the responses in order `perms[b][j]`
  (`perm[p]` = original index shown as "Response p+1"); item b has n_b = len(perms[b][0]) responses. `ranges`
  gives the range (lo, hi) `parse_scores` clips each item's scores to, or None for an item whose scores are kept as
  written (the 0/1 template: `prompts.CLIP_RANGES`); default (1, 10) for every item. `templates` (instead of
  `ranges`) names each item's template and reads its texts the template's way (`parse.parse_judgement`: a judge
  template's choice becomes one-hot scores). Returns int32 scores in the
  original order (0 where invalid or padding), bool valid, bool response mask and the int32 perms padded with
  the identity tail. `k` is only needed to shape an empty batch. Pure: no model needed, never raises on
  unparseable text.
  """
  B = len(texts)
  if len(perms) != B:
    raise ValueError(f"{B} items of texts but {len(perms)} items of perms")
  if ranges is not None and len(ranges) != B:
    raise ValueError(f"{B} items but {len(ranges)} score ranges")
  if templates is not None:
    if ranges is not None:
      raise ValueError("give either score ranges or templates, not both")
    if len(templates) != B:
      raise ValueError(f"{B} items but {len(templates)} templates")
  ks = {len(t) for t in texts}
  if len(ks) > 1:
    raise ValueError(f"every item needs the same number of samples k, got {sorted(ks)}")
  if ks and k is not None and ks != {k}:
    raise ValueError(f"expected k={k} samples per item, got {ks.pop()}")
  k = ks.pop() if ks else (k or 0)
  ns = []
  for b in range(B):
    if len(perms[b]) != len(texts[b]):
      raise ValueError(f"item {b}: {len(texts[b])} texts but {len(perms[b])} perms")
    item_ns = {len(p) for p in perms[b]}
    if len(item_ns) != 1:
      raise ValueError(f"item {b}: perms of different lengths {sorted(item_ns)}")
    ns.append(item_ns.pop())
  if n_max is None:
    n_max = max(ns, default=1)
  elif ns and max(ns) > n_max:
    raise ValueError(f"an item has {max(ns)} responses, more than n_max={n_max}")
  scores = np.zeros((B, k, n_max), np.int32)
  valid = np.zeros((B, k), bool)
  mask = np.zeros((B, n_max), bool)
  perm_arr = np.broadcast_to(np.arange(n_max, dtype=np.int32), (B, k, n_max)).copy()
  for b in range(B):
    n = ns[b]
    clip = ranges[b] if ranges is not None else DEFAULT_RANGE
    lo, hi = clip if clip is not None else (0, 0)
    mask[b, :n] = True
    for j in range(k):
      perm = [int(i) for i in perms[b][j]]
      perm_arr[b, j, :n] = perm
      if templates is not None:
        shown = parse_judgement(texts[b][j], n, templates[b])
      else:
        shown = parse_scores(texts[b][j], n, lo, hi, clip=clip is not None)
      out = unpermute(shown, perm)
      if out is not None:
        # An unclipped score can exceed int32; saturating keeps it as wrong as it was (never 0 or 1).
        scores[b, j, :n] = np.clip(out, _INT32.min, _INT32.max)
        valid[b, j] = True
  return scores, valid, mask, perm_arr


@dataclasses.dataclass(frozen=True)
class Judgement:
  """The three output lines the template asks for; a field is None when its label is missing."""

  criteria: str | None
  analysis: str | None
  scores: str | None


def split_judgement(text: str) -> Judgement:
  """Split a judgement at its `Specific Criteria:` / `Analysis:` / `Scores:` labels (last occurrence wins).

  For reports and principle analysis only; scoring always goes through `parse_scores`, which does not need the
  labels.
  """
  found: dict[str, str] = {}
  marks = list(_SECTION.finditer(text))
  for i, m in enumerate(marks):
    end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
    found[m.group(1)] = text[m.end() : end].strip()
  return Judgement(found.get("Specific Criteria"), found.get("Analysis"), found.get("Scores"))
