"""Rule-based online RL (paper §3.2): GRPO on the GRM's own judgements, rewarded by Eq. 11.

`run(config, workdir)` reads `config.model`, `config.mesh`, `config.data`, `config.seed` and `config.grpo`. Each
step takes `prompts_per_step` training items (shuffled epochs), samples `group_size` judgements of each from the
current policy (the sampler reads the training params themselves, no stale copy), rewards them +1 / -1 (right /
wrong or unparseable, `rules.rl_reward`), and runs `train.grpo.GrpoUpdater` (group advantages, clipped ratio, KL to
the frozen reference = the starting params). A step's items, response orders and sampling keys are functions of
(seed, step), so a run resumed from its last checkpoint (`grpo/checkpoints/`) ends with the same params as an
uninterrupted one. Output: `grpo/final/` params, `grpo/metrics.jsonl`, `grpo/rollouts.jsonl` (every rollout: step
(1-based, as in metrics.jsonl), item, sample, response order, text, parsed scores, reward; a resumed run rewrites
the steps it redoes), `grpo/done.json`.

RL-data filter (paper App. C.1: the RL set drops items that DeepSeek-V2-Lite-Chat gets right in all 3 samples): with
`grpo.filter.judge` set (a `models.load` spec, or "synthetic-critic" on the built-in data), that judge samples each
training item `filter.sampling.k` times before training and every item it gets right every time is dropped: a group of
all-right rollouts has zero advantage and teaches nothing. The judge is loaded, used and let go before the policy
loads. Items whose ground truth ties at the top are left out before the filter and the steps (every rollout of
one would be wrong: zero advantage) and counted in done.json (`dropped_top_tied`). Per-item counts go to
`grpo/filter.jsonl`, the totals (overall and by source) to `grpo/filter.json` (reused by
a rerun with the same settings) and to the stage's done.json.

The LLM-as-a-Judge baseline (`grm.template` "judge" / "compact_judge") learns in RL on pairwise data only (paper
App. C.2): its single-response items are left out before the filter and counted in done.json (`dropped_single`).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from absl import logging

from grm_jax import judges
from grm_jax.buckets import row_bucket
from grm_jax.files import append_jsonl, filter_jsonl, read_jsonl, step_shard, write_jsonl
from grm_jax.grm import rules
from grm_jax.grm.prompts import JUDGE_TEMPLATES
from grm_jax.judges import trajectories
from grm_jax.models import lora
from grm_jax.stages import common
from grm_jax.train.checkpoint import restore_trained, save_params
from grm_jax.train.errors import StageStopped
from grm_jax.train.fit import batch_indices
from grm_jax.train.grpo import GrpoConfig, GrpoUpdater, reference_params
from grm_jax.train.loop import run_loop
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import init_state


def initial_params(config, workdir: str, model):
  """The params GRPO starts from (and keeps as its KL reference): RFT's output or the base model's."""
  init = str(config.grpo.init)
  if init == "base":
    return model.params
  if init == "rft":
    return restore_trained(os.path.join(workdir, "rft", "final"), model.params, model.config.lora)
  raise ValueError(f"config grpo.init={init!r}; use 'rft' (the RFT stage's output) or 'base'")


def row_length(longest_prompt: int, max_new_tokens: int) -> int:
  """Tokens per GRPO training row: the longest prompt (a shuffle moves a few tokens at most, hence the slack), the
  longest judgement and its stop token, in 64-token buckets. One length per run: one compiled step."""
  return row_bucket(longest_prompt + 16 + max_new_tokens + 1)


def rollout_sampling(config, step: int) -> judges.Sampling:
  """The G rollouts per item of GRPO step `step` (`grpo.sampling`, k = `grpo.group_size`), seeded by the step so a
  resumed run draws what the uninterrupted one drew."""
  return judges.Sampling.from_config(config, "grpo.sampling", "grpo_rollouts", step, k=int(config.grpo.group_size))


STAGE_KEYS = ("seed", "model", "grm", "data", "grpo")
FILTER_KEYS = common.RL_FILTER_KEYS  # what decides the RL-data filter's verdicts


class NothingToLearn(StageStopped):
  """The RL-data filter dropped every training item."""


def filter_items(config, items, out: str) -> tuple[list, dict[str, Any]]:
  """(kept items, filter summary): items the filter judge gets right in fewer than all `filter.samples` samples."""
  f = config.grpo.filter

  def make() -> dict[str, Any]:
    judge, model = common.judge_with(config, str(f.judge), None, float(f.critic_noise))
    j = judge(model, items, judges.Sampling.from_config(config, "grpo.filter.sampling", "rl_filter"))
    del model
    right = trajectories.correctness(j, items).sum(axis=1)
    rows = [{"id": ex.id, "source": ex.source, "n": ex.n, "right": int(r), "samples": j.k,
             "parsed": int(j.valid[b].sum()), "dropped": bool(r == j.k)} for b, (ex, r) in enumerate(zip(items, right,
                                                                                                          strict=True))]
    write_jsonl(os.path.join(out, "filter.jsonl"), rows)
    return filter_summary(rows)

  summary = common.cached(os.path.join(out, "filter.json"), config, make, keys=FILTER_KEYS)
  dropped = {(r["source"], r["id"]) for r in read_jsonl(os.path.join(out, "filter.jsonl")) if r["dropped"]}
  kept = [ex for ex in items if (ex.source, ex.id) not in dropped]
  if not kept:
    raise NothingToLearn(
      f"grpo: the RL-data filter (grpo.filter.judge={str(f.judge)!r}) got all {len(items)} training items right in "
      f"all {int(f.sampling.k)} samples, so none is left to learn from (details: {os.path.join(out, 'filter.jsonl')}). "
      "Use a weaker filter judge, more samples (grpo.filter.sampling.k), harder data, or grpo.filter.judge='' to keep "
      "every item.")
  logging.info("grpo: RL-data filter kept %d of %d items (%s)", len(kept), len(items), summary["total"])
  return kept, {k: v for k, v in summary.items() if k != "fingerprint"}


def filter_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Counts of the RL-data filter, overall and by source: items, dropped (all samples right), kept, samples right
  and parsed."""

  def count(group):
    return {"items": len(group), "dropped": sum(r["dropped"] for r in group),
            "kept": sum(not r["dropped"] for r in group), "samples": sum(r["samples"] for r in group),
            "right_samples": sum(r["right"] for r in group), "parsed_samples": sum(r["parsed"] for r in group)}

  sources = sorted({r["source"] for r in rows})
  return {"total": count(rows), "by_source": {s: count([r for r in rows if r["source"] == s]) for s in sources}}


def pairwise_only(config, items) -> tuple[list, int]:
  """(the items GRPO trains on, how many single-response items were left out): the judge template's RL data has
  no n = 1 item (App. C.2: the LLM-as-a-Judge is trained on pairwise data only in RL; it names the best of several
  responses); the GRM's keeps them (0/1 template)."""
  if common.grm_template(config) not in JUDGE_TEMPLATES:
    return list(items), 0
  kept = [ex for ex in items if ex.n >= 2]
  return kept, len(items) - len(kept)


def run(config, workdir: str, progress: bool = True) -> dict[str, Any]:
  upstream = ("rft",) if str(config.grpo.init) == "rft" else ()
  return common.run_stage(config, workdir, "grpo", lambda out: _run(config, workdir, out, progress),
                          keys=STAGE_KEYS, upstream=upstream)


def _run(config, workdir: str, out: str, progress: bool) -> dict[str, Any]:
  g = config.grpo
  # Top-tied items first (a group on one is all -1: zero advantage), so the RL-data filter never sees them either.
  items, top_tied = common.without_top_tied(common.training_items(config, "train"), "grpo")
  if not items:
    raise ValueError(f"config data.train: no training items ({top_tied['total']} left out: their best is tied)")
  items, single = pairwise_only(config, items)
  if not items:
    raise ValueError(f"config data.train: no item of two or more responses for the {common.grm_template(config)} "
                     f"template ({single} single-response items left out: it learns on pairwise data only)")
  filtered = None
  if str(g.filter.judge):
    items, filtered = filter_items(config, items, out)
  model = common.load_base(config)
  start = initial_params(config, workdir, model)
  gc = GrpoConfig.from_config(g)
  ref = reference_params(model.config, start, gc)
  optimizer, schedule = make_optimizer(g.optim, int(g.steps))
  # The state takes over the start params' buffers and the base weights are let go (each step's sampler reads the
  # state's params): the policy's weights are on the device once (grm_jax.aot counts what stays resident).
  # Under LoRA only the adapters are the state's: the base weights stay frozen beside it (`lora.split`).
  trained, frozen = lora.split(start, model.config.lora)
  state = init_state(trained, optimizer, donate=True)
  model = common.with_params(model, None)
  del start, trained
  step = GrpoStep(config, items, model, GrpoUpdater(model.config, gc, optimizer, schedule, frozen, int(config.seed)),
                  ref, RolloutLog(os.path.join(out, "rollouts.jsonl")))
  state, _ = run_loop(name="grpo", state=state, step_fn=step, num_steps=int(g.steps), out_dir=out,
                      save_every=g.checkpoint.save_every, keep=g.checkpoint.keep, progress=progress,
                      max_nonfinite=int(g.optim.max_nonfinite_steps))
  save_params(os.path.join(out, "final"), state.params, model)
  return {**_summary(read_jsonl(os.path.join(out, "metrics.jsonl")), int(g.steps)), "items": len(items),
          "dropped_top_tied": top_tied, "dropped_single": single,
          **({"filter": filtered} if filtered is not None else {})}


def _summary(history: list[dict[str, Any]], steps: int) -> dict[str, Any]:
  """The mean reward over the first and the last few steps, and the sampler / trainer log-prob gap at step 0."""
  k = max(1, min(5, len(history) // 2))
  return {
    "steps": steps,
    "reward_mean_first": float(np.mean([h["reward_mean"] for h in history[:k]])),
    "reward_mean_last": float(np.mean([h["reward_mean"] for h in history[-k:]])),
    "logp_diff_step0": history[0]["logp_diff_sampler_trainer"] if history else None,
  }


class RolloutLog:
  """`grpo/rollouts.jsonl` (on an object store: `grpo/rollouts/step_<step>.jsonl`, one object per step; read either
  with `files.read_jsonl`): every rollout of every step. The first write of a resumed run first drops the lines of
  the steps it redoes, so each step appears once."""

  def __init__(self, path: str):
    self.path = path
    self.started = False

  def write(self, step: int, batch, j: judges.Judgements, reward: np.ndarray) -> None:
    if not self.started:
      filter_jsonl(self.path, lambda r: r["step"] <= step)
    self.started = True
    # On an object store each step is one new object (`grpo/rollouts/step_000000123.jsonl`): hundreds of rollouts a
    # step appended to one object would re-upload the whole log every step.
    append_jsonl(self.path, [
      {"step": int(step) + 1, "item": f"{ex.source}/{ex.id}", "sample": s,
       "perm": [int(i) for i in j.perms[b, s, : ex.n]], "text": j.texts[b][s], "valid": bool(j.valid[b, s]),
       "scores": [float(x) for x in j.scores[b, s, : ex.n]] if j.valid[b, s] else None, "reward": float(reward[b, s])}
      for b, ex in enumerate(batch) for s in range(j.k)], shard=step_shard(int(step) + 1))


class GrpoStep:
  """One GRPO step as `run_loop` calls it, (state, step) -> (state, metrics): the step's items, G rollouts of each
  from the live params, Eq. 11 rewards, the update, and the held-out check on its schedule."""

  def __init__(self, config, items, model, updater: GrpoUpdater, ref, log: RolloutLog):
    self.config, self.items, self.model, self.updater, self.ref, self.log = config, items, model, updater, ref, log
    self.heldout = common.heldout_check(config, "grpo", model)
    sampling = rollout_sampling(config, 0)
    # One row length for every step: the longest training prompt (in the original response order; a shuffle moves
    # a few tokens at most, hence the slack) plus the longest judgement, in 64-token buckets.
    longest_prompt = max(len(trajectories.training_prompt_ids(
      model, ex, tuple(range(ex.n)), sampling.single_template if ex.n == 1 else sampling.template)) for ex in items)
    self.length = row_length(longest_prompt, sampling.max_new_tokens)

  def __call__(self, state, step: int):
    config, P = self.config, int(self.config.grpo.prompts_per_step)
    batch = [self.items[i] for i in batch_indices(len(self.items), P, step, int(config.seed))]
    sampling = rollout_sampling(config, step)
    j = judges.judge(common.with_params(self.model, self.updater.params(state)), batch, sampling, progress=False)
    gt = np.zeros((P, j.scores.shape[-1]))
    for i, ex in enumerate(batch):
      gt[i, : ex.n] = ex.rewards
    reward = np.asarray(rules.rl_reward(j.scores, j.valid, gt[:, None], j.response_mask[:, None]))
    self.log.write(step, batch, j, reward)
    rows = [(b, s) for b in range(P) for s in range(j.k)]
    prompts = [j.prompt_ids[b][s] for b, s in rows]
    completions = [trajectories.completion_ids(self.model, j.tokens[b][s], bool(j.stopped[b, s])) for b, s in rows]
    state, metrics = self.updater.update(
      state, self.ref, prompts, completions, [j.logprobs[b][s] for b, s in rows], reward, pad_id=self.model.pad_id,
      max_len=max(len(p) for p in prompts) + sampling.max_new_tokens + 1, length=self.length)
    metrics["parse_rate"] = float(j.valid.mean())
    metrics["sampler_seconds"] = j.sampler_seconds
    if self.heldout is not None:
      metrics.update(self.heldout(self.updater.params(state), step))
    return state, metrics
