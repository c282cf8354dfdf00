"""The meta RM at work (paper §4): its input sequence for a sampled judgement, its logits, loading a trained one.

The metarm stage trains it and evaluation uses it (MetaRM@k), through these functions: a judgement is scored in the
plain meta template with the responses in the order that sample saw (`grm.prompts.meta_prompt`), in the meta RM's
own chat template; a sequence over `max_len` loses the start of its prompt (the judgement and the context right
before it decide correctness); one whose judgement alone does not fit is not scored. The scoring itself is any
scalar-head RM's (`judges.scalar_rm`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from grm_jax import files, models
from grm_jax.data.example import PreferenceExample
from grm_jax.grm.prompts import meta_prompt
from grm_jax.judges.model_judge import Judgements
from grm_jax.judges.scalar_rm import score_sequences
from grm_jax.models import lora
from grm_jax.models.scalar_head import init_head_params, truncate
from grm_jax.train.checkpoint import restore_trained

# The meta RM's settings that configs checks before any model loads (`metarm.policy`, `metarm.method`).
META_POLICIES = ("grpo", "rft", "base")  # whose judgements are sampled besides RFT's
META_METHODS = ("finetune", "probe")  # BCE on every weight (the paper's) | a logistic probe on frozen states


def meta_sequence(model, context, responses, text: str, perm, max_len: int) -> tuple[list[int] | None, bool]:
  """(token ids, truncated) of one (meta prompt, judgement); (None, False) if the judgement alone is too long."""
  return _meta_ids(model, meta_prompt(list(context), list(responses), text, perm), max_len)


def meta_ids(model, messages: list[dict[str, str]], max_len: int) -> list[int] | None:
  """Token ids of meta RM input messages ([user, assistant]) cut to `max_len` as in training; None when the judgement
  alone does not fit (the server's /v1/rewards scores `grm_jax.reward.judging.meta_messages` through this)."""
  return _meta_ids(model, messages, max_len)[0]


def _meta_ids(model, messages, max_len: int) -> tuple[list[int] | None, bool]:
  full = [int(t) for t in model.encode_chat(messages, add_generation_prompt=False)]
  if len(full) <= max_len:
    return full, False
  prompt = model.encode_chat(messages[:1], add_generation_prompt=True)
  answer = len(full) - len(prompt) if full[: len(prompt)] == list(prompt) else 0
  if answer >= max_len:
    return None, False
  return full[-max_len:], True


def load_meta_rm(path: str, dtype: str | None = None):
  """(model, params) of a meta RM written by the metarm stage: `path` is the stage folder (`<workdir>/metarm`); its
  weights are placed on the current mesh scope."""
  spec_path = os.path.join(path, "model.json")
  if not files.exists(spec_path):
    raise FileNotFoundError(f"{spec_path}: not a meta RM folder (run the metarm stage; point at <workdir>/metarm)")
  spec = files.read_json(spec_path)
  adapters = lora.Lora.from_json(spec.get("lora"))
  dtype = dtype or spec.get("dtype", "float32")
  model = lora.attach(models.load(spec["name"], dtype=dtype, param_dtype=dtype if adapters.rank else None), adapters)
  model = truncate(model, int(spec.get("layers", 0)))  # a head read from a middle layer: the layers above go unused
  like = init_head_params(model.params, model.config.hidden_size)
  return model, restore_trained(os.path.join(path, "final"), like, adapters)


def meta_max_len(path: str) -> int:
  """The sequence limit the meta RM at `path` was trained with (longer inputs are cut the same way)."""
  return int(files.read_json(os.path.join(path, "model.json")).get("max_len", 1024))


def judgement_logits(meta_rm: tuple[Any, Any, int], examples: Sequence[PreferenceExample], j: Judgements,
                     batch_size: int) -> np.ndarray:
  """float32 [B, k]: the meta RM's logit for each sample (its own response order and text), on the meta RM's mesh.

  Invalid samples are not scored (logit 0): voting drops them whatever their meta reward, so scoring them would be
  wasted compute. A sample whose judgement alone exceeds the meta RM's max_len gets -inf (last in the ranking).
  """
  meta_model, params, max_len = meta_rm
  out = np.zeros((len(examples), j.k), np.float32)
  seqs, slots = [], []
  for b, ex in enumerate(examples):
    for s in range(j.k):
      if not j.valid[b, s]:
        continue
      ids, _ = meta_sequence(meta_model, ex.context, ex.responses, j.texts[b][s], j.perms[b, s, : ex.n], max_len)
      if ids is None:
        out[b, s] = -np.inf
        continue
      seqs.append(ids)
      slots.append((b, s))
  logits = score_sequences(meta_model, params, seqs, batch_size, max_len)
  for (b, s), x in zip(slots, logits, strict=True):
    out[b, s] = x
  return out
