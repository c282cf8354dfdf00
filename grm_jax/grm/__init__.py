"""The paper's reward math, with no model state: prompts, score parsing, the correctness rule, voting.

Text work (prompts, parsing) is plain Python on the host; the rule and voting are array functions that run
on numpy or under `jax.jit`. Data flow: `grm_prompt` -> model samples -> `parse_judgement` -> `unpermute` ->
`is_correct` / `rl_reward` (training) or `vote` -> `choose_best` (inference).
`judge` runs the sampling side end to end (examples -> shuffled prompts -> model -> score arrays).

Importing this package, `prompts`, `parse`, `rules` or `voting` does not import jax: the judge (which runs the
model) loads on first use of `judge` or `Judgements`, and `choose_best` (its random tie-break takes a jax key) on
its first use, so `grm_jax.reward` shares these rules inside a process that has no jax.
"""

import importlib
from typing import Any

from grm_jax.grm.parse import (
  Judgement,
  find_score_block,
  judge_texts_to_arrays,
  parse_choice,
  parse_judgement,
  parse_scores,
  split_judgement,
  stack_scores,
  unpermute,
)
from grm_jax.grm.prompts import (
  DEFAULT_TEMPLATE,
  GRM_TEMPLATES,
  HINT_TEMPLATE,
  JUDGE_TEMPLATE,
  JUDGE_TEMPLATES,
  META_TEMPLATE,
  NO_PRINCIPLES_TEMPLATE,
  PREFERENCE_STRENGTHS,
  SINGLE_TEMPLATE,
  GrmPrompt,
  grm_prompt,
  hint_suffix,
  meta_prompt,
  render_context,
  render_responses,
  sample_permutation,
)
from grm_jax.grm.rules import has_unique_best, is_correct, judgement_correct, pick_correct, rl_reward, true_best
from grm_jax.grm.voting import (
  default_k_meta,
  meta_keep,
  token_prob_votes,
  unpermute_batch,
  vote,
  voted_correct,
)

__all__ = [
  "DEFAULT_TEMPLATE",
  "GRM_TEMPLATES",
  "HINT_TEMPLATE",
  "JUDGE_TEMPLATE",
  "JUDGE_TEMPLATES",
  "NO_PRINCIPLES_TEMPLATE",
  "PREFERENCE_STRENGTHS",
  "META_TEMPLATE",
  "SINGLE_TEMPLATE",
  "GrmPrompt",
  "Judgement",
  "Judgements",
  "choose_best",
  "default_k_meta",
  "find_score_block",
  "grm_prompt",
  "has_unique_best",
  "hint_suffix",
  "is_correct",
  "judge",
  "judge_texts_to_arrays",
  "judgement_correct",
  "meta_keep",
  "meta_prompt",
  "parse_choice",
  "parse_judgement",
  "parse_scores",
  "pick_correct",
  "render_context",
  "render_responses",
  "rl_reward",
  "sample_permutation",
  "split_judgement",
  "stack_scores",
  "token_prob_votes",
  "true_best",
  "unpermute",
  "unpermute_batch",
  "vote",
  "voted_correct",
]

# `judge` lives in `model_judge`, not a module named `judge`: importing a submodule binds its name on the package,
# which would shadow a lazily loaded function of the same name.
_LAZY = {"Judgements": "grm_jax.grm.model_judge", "judge": "grm_jax.grm.model_judge",
         "choose_best": "grm_jax.grm.choice"}


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 'grm_jax.grm' has no attribute {name!r}")
