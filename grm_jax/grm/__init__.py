"""The paper's reward math, with no model state and no jax: prompts, score parsing, the correctness rule, voting.

Text work (prompts, parsing) is plain Python on the host; the rule and voting are array functions that run
on numpy or under `jax.jit` (`arrays.array_module` picks by the caller's arrays). Data flow: `grm_prompt` -> model
samples -> `parse_judgement` -> `unpermute` -> `is_correct` / `rl_reward` (training) or `vote` (inference).
Running a model on these rules (`judge`, the meta RM, TokenProb) lives in `grm_jax.judges`.

Nothing in this package imports jax, flax or the model stack (`.importlinter` checks it), so `grm_jax.reward`
shares these rules inside a PyTorch RL job that has no jax.
"""

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
  item_votes,
  meta_keep,
  token_prob_votes,
  unpermute_batch,
  vote,
  voted_correct,
  voted_samples,
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
  "default_k_meta",
  "find_score_block",
  "grm_prompt",
  "has_unique_best",
  "hint_suffix",
  "is_correct",
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
  "item_votes",
  "vote",
  "voted_correct",
  "voted_samples",
]
