"""A sampled judgement as training data: is it right (Eq. 10), and the token ids SFT, GRPO and the meta RM learn from.

RFT, GRPO, the meta RM and evaluation's meta-RM diagnostics share these, so "right" and "the prompt a judgement
answers" mean the same everywhere.
"""

from __future__ import annotations

import numpy as np

from grm_jax.grm import rules
from grm_jax.grm.prompts import grm_prompt

HINTED_SCOPES = ("all", "not_too_easy")
"""RFT: which items get a hinted sample. "all" items with n >= 2, each sample kept if right (paper §3.2: a hinted
sample is rejected only if wrong, with no too-easy rule), or "not_too_easy" (ours: skip the items whose N plain
samples were all right, which SFT drops anyway, and save their hinted samples)."""

LABELLED_SINGLE_TEMPLATES = ("single",)
"""Templates whose n = 1 scores share the 0/1 scale of the labels (paper App. G, the training template)."""


def label_comparable(judgements, examples) -> np.ndarray:
  """bool [B]: items whose judgements Eq. 10 can check against the labels.

  n >= 2 always (the rule only orders scores against each other); n = 1 only with the 0/1 template. A single
  response judged with a 1-10 template (evaluation's, paper App. D.1: ReaLMistake) has no Eq. 10 answer: S_1 in
  1..10 against r_1 in {0, 1} would call every judgement wrong (or a 1 right by accident).
  """
  return np.array([ex.n >= 2 or t in LABELLED_SINGLE_TEMPLATES
                   for ex, t in zip(examples, judgements.templates, strict=True)], bool).reshape(len(examples))


def correctness(judgements, examples, *, skip_incomparable: bool = False) -> np.ndarray:
  """bool [B, k]: each sampled judgement right under Eq. 10 (the one rule RFT, GRPO and the meta RM share).

  An item that is not `label_comparable` raises ValueError; with `skip_incomparable` its row is False and the
  caller must leave it out by `label_comparable` (a False there means "no answer", not "wrong").
  """
  comparable = label_comparable(judgements, examples)
  if not skip_incomparable and not comparable.all():
    b = int(np.flatnonzero(~comparable)[0])
    raise ValueError(f"item {b} ({examples[b].source}/{examples[b].id}) has one response judged with the "
                     f"{judgements.templates[b]!r} template: its 1-10 score cannot be checked against a 0/1 label")
  n_max = judgements.scores.shape[-1]
  rewards = np.zeros((len(examples), n_max))
  for i, ex in enumerate(examples):
    rewards[i, : ex.n] = ex.rewards
  right = np.asarray(rules.is_correct(judgements.scores, judgements.valid, rewards[:, None], judgements.response_mask[
    :, None]))
  return right & comparable[:, None]


def training_prompt_ids(model, example, perm, template: str) -> list[int]:
  """The un-hinted GRM prompt for one sample's response order: what SFT and the meta RM condition on."""
  prompt = grm_prompt(list(example.context), example.responses, perm=perm, template=template)
  return [int(t) for t in model.encode_chat(prompt.messages)]


def completion_ids(model, tokens, stopped: bool) -> list[int]:
  """A sampled judgement as an SFT target: its tokens plus the end-of-turn token when it ended on one, so the
  model learns to stop."""
  ids = [int(t) for t in tokens]
  if stopped and model.eos_id is not None:
    ids.append(int(model.eos_id))
  return ids
