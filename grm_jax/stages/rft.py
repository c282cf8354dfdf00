"""Rejective fine-tuning (paper §3.2 and App. C.1): sample judgements, keep the right ones, fine-tune on them.

`run(config, workdir)` reads `config.model`, `config.mesh`, `config.data`, `config.seed` and `config.rft`:

1. Sampling, by `rft.sampler`: the model being trained, another checkpoint (the paper's teacher: a strong pretrained
   GRM, DeepSeek-V2.5, samples the RFT set) or the rule-based critic of the built-in data. Every training item is
   judged `sampling.k` (N_RFT = 3) times without a hint, each sample with its own response order (`judges.judge`). A
   sample is right under Eq. 10 (`rules.is_correct`); wrong ones are rejected, and an item whose N samples are all
   right is dropped as too easy. With `hinted`, items with n >= 2 (`hinted_scope`: all of them, our reading of the
   paper, or only those not too easy) are sampled once more with "The best response is: Response j" appended, kept if
   right. The hint only steers the sample: the SFT example pairs the judgement with the *un-hinted* prompt of the same
   response order, which is what the model will see at inference (the paper does not say; ours, the STaR
   "rationalisation" reading). A teacher's texts are re-tokenized by the trained model's tokenizer.
   Items of n >= 2 whose ground truth ties at the top are left out before sampling (Eq. 10 has no right judgement
   for them) and counted (`dropped_top_tied`). Written: `rft/judgements.jsonl` (every un-hinted sample, right or
   wrong: the meta RM's data), `rft/accepted.jsonl` (the SFT set) and `rft/stats.json` (acceptance by source and by
   n, the top-tied count). A rerun with the same sampling settings reuses them.
   Table 4's ablations (paper §3.2): `non_hinted=False` draws no un-hinted sample (SFT on the right hinted ones
   only), `reject=False` (ours) keeps every sampled trajectory, right or wrong, with no too-easy rule, and
   `rm_data=False` samples nothing: SFT on all of `general_data` alone ("w/o Rejective Sampling"; GRPO on its params
   is the table's RL row).
2. SFT on the accepted trajectories mixed with general chat data (`general_data`, a `general_fraction` share of the
   SFT rows; the paper's RFT set is 1070K general of 1256K), loss on the assistant tokens only, for `steps` optimizer
   steps (or `epochs` passes) in shuffled batches; checkpoints and metrics under `rft/`; output params in
   `rft/final/`.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from typing import Any

import numpy as np
from absl import logging

from grm_jax import files, judges, seeds
from grm_jax.buckets import row_bucket
from grm_jax.data.benchmarks import to_turns
from grm_jax.data.example import DataError
from grm_jax.data.io import BadRow, iter_rows, list_files
from grm_jax.judges import trajectories
from grm_jax.models import lora
from grm_jax.stages import common
from grm_jax.train import losses
from grm_jax.train.batching import pack
from grm_jax.train.checkpoint import save_params
from grm_jax.train.errors import StageStopped
from grm_jax.train.fit import FitConfig, fit
from grm_jax.train.logprobs import token_logprobs

# What decides the sampled trajectories (`common.cached`): the sampler, its settings and the items.
SAMPLING_KEYS = ("seed", "model", "data", "grm", "rft.sampler", "rft.critic_noise", "rft.hinted", "rft.hinted_scope",
                 "rft.sampling", "rft.non_hinted", "rft.reject")


def _as_training_pair(model, sampler_model, example, j, b: int, s: int) -> tuple[list[int], list[int]]:
  """(prompt ids, completion ids) in the trained model's tokenizer. A foreign sampler's text is re-tokenized; the
  model's own samples keep their exact sampled ids."""
  perm = tuple(int(p) for p in j.perms[b, s, : example.n])
  if sampler_model is model:
    return j.prompt_ids[b][s], trajectories.completion_ids(model, j.tokens[b][s], bool(j.stopped[b, s]))
  prompt = trajectories.training_prompt_ids(model, example, perm, j.templates[b])
  completion = model.tokenizer.encode(j.texts[b][s], add_special_tokens=False)
  return prompt, trajectories.completion_ids(model, completion, True)


def sample(config, model, examples, out_dir: str) -> dict[str, Any]:
  """Step 1: judge, filter, write the judgements and the accepted trajectories; returns the statistics (which the
  stage stores in stats.json, the marker of this step). Items whose ground truth ties at the top are left out first
  and counted (`common.without_top_tied`). Table 4's ablations: `rft.non_hinted=False` draws no non-hinted sample
  (only hinted trajectories are trained on), `rft.reject=False` keeps every sampled trajectory, right or wrong."""
  rc = config.rft
  examples, top_tied = common.without_top_tied(examples, "rft")
  non_hinted, reject = bool(rc.non_hinted), bool(rc.reject)
  scope = str(rc.hinted_scope)
  if scope not in trajectories.HINTED_SCOPES:
    raise ValueError(f"config rft.hinted_scope={scope!r}: choose one of {trajectories.HINTED_SCOPES}")
  judge, sampler_model = common.judge_with(config, str(rc.sampler), model, float(rc.critic_noise))
  sampling = judges.Sampling.from_config(config, "rft.sampling", "rft")
  B = len(examples)
  valid, correct, seconds = np.zeros((B, 0), bool), np.zeros((B, 0), bool), 0.0
  judgements, accepted = [], []
  if non_hinted and examples:  # (none left when every item is top-tied: nothing to judge)
    j = judge(sampler_model, examples, sampling)
    valid, correct = np.asarray(j.valid, bool), np.asarray(trajectories.correctness(j, examples), bool)
    seconds = j.sampler_seconds
    for b, ex in enumerate(examples):
      for s in range(j.k):
        row = {"id": ex.id, "source": ex.source, "n": ex.n, "context": list(ex.context),
               "responses": list(ex.responses), "rewards": list(ex.rewards),
               "perm": [int(i) for i in j.perms[b, s, : ex.n]], "text": j.texts[b][s], "valid": bool(j.valid[b, s]),
               "correct": bool(correct[b, s]), "template": j.templates[b]}
        judgements.append(row)
        # Rejection (Eq. 10): a wrong sample is dropped, and so is every sample of an item all N got right.
        if not reject or (correct[b, s] and not correct[b].all()):
          prompt, completion = _as_training_pair(model, sampler_model, ex, j, b, s)
          accepted.append({**row, "hinted": False, "prompt_ids": prompt, "completion_ids": completion})
  # Too easy: all N non-hinted samples right (no item is, without rejection or without non-hinted samples).
  too_easy = correct.all(axis=1) & (correct.shape[1] > 0) & reject

  hinted_idx = [b for b, ex in enumerate(examples)
                if rc.hinted and ex.n > 1 and (scope == "all" or not too_easy[b])]
  hinted_ok = np.zeros(B, bool)
  if hinted_idx:
    sub = [examples[b] for b in hinted_idx]
    hinted = sampling.replace(k=1, seed=seeds.seed_for(int(config.seed), "rft_hinted"))
    h = judge(sampler_model, sub, hinted, hint=True)
    seconds += h.sampler_seconds
    h_correct = trajectories.correctness(h, sub)[:, 0]
    for i, b in enumerate(hinted_idx):
      if reject and not h_correct[i]:
        continue
      hinted_ok[b] = True
      ex, perm = examples[b], tuple(int(p) for p in h.perms[i, 0, : examples[b].n])
      _, completion = _as_training_pair(model, sampler_model, ex, h, i, 0)
      accepted.append({
        "id": ex.id, "source": ex.source, "n": ex.n, "perm": list(perm), "text": h.texts[i][0], "hinted": True,
        "correct": bool(h_correct[i]),
        "prompt_ids": trajectories.training_prompt_ids(model, ex, perm, h.templates[i]),  # the un-hinted prompt
        "completion_ids": completion,
      })

  files.write_jsonl(os.path.join(out_dir, "judgements.jsonl"), judgements)
  files.write_jsonl(os.path.join(out_dir, "accepted.jsonl"), accepted)
  stats = _statistics(examples, valid, correct, too_easy, hinted_idx, hinted_ok, accepted, seconds)
  return {**stats, "dropped_top_tied": top_tied, "non_hinted": non_hinted, "reject": reject}


def _statistics(examples, valid, correct, too_easy, hinted_idx, hinted_ok, accepted, seconds) -> dict[str, Any]:
  """Acceptance rates overall, by source and by n (how much each kind of item contributes to SFT)."""
  groups: dict[str, dict[str, dict[str, int]]] = {"by_source": defaultdict(lambda: defaultdict(int)),
                                                  "by_n": defaultdict(lambda: defaultdict(int))}
  hinted = set(hinted_idx)
  n_accepted = defaultdict(int)
  for row in accepted:
    n_accepted[(row["id"], row["source"])] += 1
  for b, ex in enumerate(examples):
    for key, name in (("by_source", ex.source), ("by_n", f"n={ex.n}")):
      g = groups[key][name]
      g["items"] += 1
      g["samples"] += correct.shape[1]
      g["valid_samples"] += int(valid[b].sum())
      g["correct_samples"] += int(correct[b].sum())
      g["too_easy_items"] += int(too_easy[b])
      g["hinted_samples"] += int(b in hinted)
      g["hinted_accepted"] += int(hinted_ok[b])
      g["accepted_trajectories"] += n_accepted[(ex.id, ex.source)]
      g["items_with_accepted"] += int(n_accepted[(ex.id, ex.source)] > 0)

  def finish(g):
    g = dict(g)
    g["correct_rate"] = g["correct_samples"] / max(g["samples"], 1)
    g["parse_rate"] = g["valid_samples"] / max(g["samples"], 1)
    g["hinted_accept_rate"] = g["hinted_accepted"] / max(g["hinted_samples"], 1)
    return g

  total = defaultdict(int)
  for key in ("items", "samples", "valid_samples", "correct_samples", "too_easy_items", "hinted_samples",
              "hinted_accepted", "accepted_trajectories", "items_with_accepted"):
    total[key] = 0  # present even with no item left
  for g in groups["by_n"].values():
    for k, v in g.items():
      total[k] += v
  return {
    "total": finish(total),
    "by_source": {k: finish(v) for k, v in sorted(groups["by_source"].items())},
    "by_n": {k: finish(v) for k, v in sorted(groups["by_n"].items())},
    "sampler_seconds": seconds,
  }


def general_examples(path: str, model) -> list[tuple[list[int], list[int]]]:
  """(prompt ids, completion ids) of general chat SFT data: a .jsonl / .json / .parquet file or a folder of them (an
  HF data set's layout, e.g. a snapshot of HuggingFaceH4/ultrachat_200k), rows {"messages": [...]} or ShareGPT's
  {"conversations": [{"from", "value"}, ...]}. The last assistant turn is the target; earlier turns are context."""
  out = []
  try:
    found = list_files(path)
  except DataError as e:
    raise ValueError(f"config rft.general_data={path!r}: {e}") from e
  for f in found:
    for loc, row in iter_rows(f):
      where = f"{f}: {loc}"
      try:
        if isinstance(row, BadRow) or not isinstance(row, dict):
          raise ValueError("not a JSON object")
        key = "messages" if "messages" in row else "conversations"
        messages = to_turns(row[key], key)
        if messages[-1]["role"] != "assistant":
          raise ValueError("the last message must be the assistant's answer")
      except (KeyError, DataError, ValueError) as e:
        raise ValueError(f"{where}: expected {{\"messages\": [..., {{\"role\": \"assistant\", ...}}]}}: {e}") from e
      prompt = model.encode_chat(messages[:-1], add_generation_prompt=True)
      full = model.encode_chat(messages, add_generation_prompt=False)
      if full[: len(prompt)] != prompt:
        raise ValueError(f"{where}: the chat template does not extend the prompt with the answer")
      out.append((prompt, full[len(prompt) :]))
  return out


def mix_general(sequences: list, general: list, fraction: float, seed: int) -> list:
  """The accepted trajectories plus general chats drawn without replacement so that they are `fraction` of the
  result (as far as `general` reaches; fewer if it is smaller)."""
  if not sequences or fraction <= 0 or not general:
    return list(sequences)
  want = int(round(len(sequences) * fraction / (1 - fraction)))
  rng = seeds.rng(seed, "rft_general_mix")
  return list(sequences) + [general[i] for i in rng.choice(len(general), size=min(want, len(general)), replace=False)]


def sft_loss_fn(cfg, config_group):
  """NLL of the judgement tokens (`loss_mask`) under `config_group.loss_agg`, plus entropy and token count."""

  def loss_fn(params, mb):
    logp, ent = token_logprobs(cfg, params, mb["tokens"], mb["mask"], rng=mb.get("rng"), needed=mb["loss_mask"])
    loss = losses.nll_loss(logp, mb["loss_mask"], mode=config_group.loss_agg)
    return loss, {"entropy": losses.aggregate(ent, mb["loss_mask"], "token_mean"),
                  "tokens": losses.Weighted(mb["loss_mask"].sum(), 1.0)}

  return loss_fn


def sft(model, sequences, group, out_dir: str, seed: int, progress=True, donate: bool = False, on_step=None):
  """Fine-tunes `model.params` on (prompt, completion) pairs for `group.epochs`; returns (the trained params: all of
  them, or the adapters under LoRA, history).
  `donate`: the train state takes over `model.params`' buffers (deleted afterwards; no second copy on device).
  `on_step`: the held-out check (`common.heldout_check`)."""
  # One row length for the whole run (the longest sequence's bucket, capped at max_len): one compiled step.
  length = min(row_bucket(max(len(p) + len(c) for p, c in sequences)), int(group.max_len))

  def make_batch(idx):
    batch, _ = pack([sequences[i][0] for i in idx], [sequences[i][1] for i in idx], pad_id=model.pad_id,
                    max_len=int(group.max_len), length=length)
    return batch

  trained, frozen = lora.split(model.params, model.config.lora)  # under LoRA the adapters train, the base is frozen
  return fit(name="rft/sft", params=trained, loss_fn=sft_loss_fn(model.config, group), make_batch=make_batch,
             num_rows=len(sequences), settings=FitConfig.from_config(group, "rft"), out_dir=out_dir, seed=seed,
             compute_dtype=model.config.dtype, donate=donate, progress=progress, frozen=frozen, on_step=on_step)


class TooFewAccepted(StageStopped):
  """RFT accepted fewer trajectories than `rft.min_accepted`: fine-tuning on them would pass on the base model."""


def _too_few_message(accepted: int, minimum: int, t: dict[str, Any], out: str, top_tied: int = 0) -> str:
  return (
    f"rft: {accepted} trajectories accepted, fewer than rft.min_accepted={minimum}. Sampled {t['samples']} judgements "
    f"of {t['items']} items ({top_tied} more left out: their best response is tied): {t['valid_samples']} parsed "
    f"({100 * t['parse_rate']:.1f}%), {t['correct_samples']} "
    f"right, {t['too_easy_items']} items too easy; hinted {t['hinted_accepted']} of {t['hinted_samples']} right "
    f"(details: {os.path.join(out, 'stats.json')}, {os.path.join(out, 'judgements.jsonl')}). Sample with a model "
    "that writes parseable judgements (rft.sampler), give it more tokens (rft.sampling.max_new_tokens), items "
    "(data.train_limit) or samples (rft.sampling.k), or set rft.min_accepted=0 to go on with the base params.")


STAGE_KEYS = ("seed", "model", "grm", "data", "rft")


def run(config, workdir: str) -> dict[str, Any]:
  return common.run_stage(config, workdir, "rft", lambda out: _run(config, out), keys=STAGE_KEYS)


def _run(config, out: str) -> dict[str, Any]:
  model = common.load_base(config)
  if config.rft.rm_data:
    stats = common.cached(os.path.join(out, "stats.json"), config,
                          lambda: sample(config, model, common.training_items(config, "train"), out),
                          keys=SAMPLING_KEYS)
    accepted = files.read_jsonl(os.path.join(out, "accepted.jsonl"))
    if len(accepted) < int(config.rft.min_accepted):
      raise TooFewAccepted(_too_few_message(len(accepted), int(config.rft.min_accepted), stats["total"], out,
                                           stats["dropped_top_tied"]["total"]))
    sequences = [(row["prompt_ids"], row["completion_ids"]) for row in accepted]
    if config.rft.general_data and config.rft.general_fraction > 0 and sequences:
      general = general_examples(config.rft.general_data, model)
      sequences = mix_general(sequences, general, float(config.rft.general_fraction), int(config.seed))
  else:
    # Table 4's "w/o Rejective Sampling": no RM trajectory at all, SFT on the general chat data alone (all of it; its
    # RL row is GRPO on these params). Nothing is sampled; stats.json says so.
    stats = {"rm_data": False, "total": {}, "dropped_top_tied": {"total": 0, "by_source": {}}}
    files.write_json(os.path.join(out, "stats.json"), stats)
    accepted = []
    for name in ("judgements.jsonl", "accepted.jsonl"):  # none: the meta RM reads no RFT judgement of this run
      files.write_jsonl(os.path.join(out, name), [])
    sequences = general_examples(config.rft.general_data, model)
  logging.info("rft: %d accepted trajectories (%d SFT sequences); stats %s", len(accepted), len(sequences),
               json.dumps(stats["total"]))
  history = []
  params = lora.split(model.params, model.config.lora)[0]
  if sequences:
    params, _ = sft(model, sequences, config.rft, out, int(config.seed), donate=True,
                    on_step=common.heldout_check(config, "rft", model))
    history = files.read_jsonl(os.path.join(out, "metrics.jsonl"))  # all steps, also those before a resume
  else:
    logging.warning("rft: no trajectory was accepted; the base params are passed on unchanged")
  save_params(os.path.join(out, "final"), params, model)
  return {
    "accepted": len(accepted),
    "sft_sequences": len(sequences),
    "sft_steps": len(history),
    "sft_loss_first": history[0]["loss"] if history else None,
    "sft_loss_last": history[-1]["loss"] if history else None,
    "stats": stats["total"],
    "dropped_top_tied": stats["dropped_top_tied"]["total"],
  }
