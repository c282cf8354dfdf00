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


def correctness(judgements, examples) -> np.ndarray:
  """bool [B, k]: each sampled judgement right under Eq. 10 (the one rule RFT, GRPO and the meta RM share)."""
  n_max = judgements.scores.shape[-1]
  rewards = np.zeros((len(examples), n_max))
  for i, ex in enumerate(examples):
    rewards[i, : ex.n] = ex.rewards
  return np.asarray(rules.is_correct(judgements.scores, judgements.valid, rewards[:, None], judgements.response_mask[
    :, None]))


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
