"""Generates grpo_trl.json: GRPO losses, advantages, gradients and metrics computed by TRL's own GRPOTrainer code.

    .venv/bin/python tests/train/golden/make_grpo_trl.py    # needs torch, transformers, trl (not needed by the test)

The numbers come from TRL, not from a re-implementation of its formulas: for each case a real `trl.GRPOTrainer` is
built (a 1-layer Llama with random weights and a word-level tokenizer, saved to a temporary folder, so nothing is
downloaded), and then its real methods run on fixed tensors:

* `_generate_and_score_completions` turns the rollouts into padded tensors, calls the reward function and computes
  the group advantages (`scale_rewards`), and the reference log-probs through `_get_per_token_logps_and_entropies`.
  Generation is replaced by TRL's own `rollout_func` hook, which returns fixed prompt / completion ids; the reward
  function returns the fixed reward of each rollout (a dataset column); the reference model is replaced by a module
  whose fused-LM-head forward returns the chosen reference log-probs.
* `_compute_loss` gets the policy as the same kind of module, whose log-probs are an `nn.Parameter`, and the old
  log-probs as `old_per_token_logps` (what TRL computes itself when num_iterations > 1). `loss.backward()` then gives
  d loss / d logp per token; the KL and clip-ratio metrics are read from the trainer's `_metrics`.

The fixed inputs: 3 prompts x G = 4 rollouts with completion lengths 1..8 (right-padded, padding positions hold
finite junk that the mask must remove), old log-probs far enough from the current ones that clipping triggers on both
sides, and rewards with one 1-of-4 group, one non-binary group and one zero-variance group.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is "experimental" in TRL 1.16
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

OUT = Path(__file__).with_name("grpo_trl.json")

P, G = 3, 4  # prompts, rollouts per prompt
B = P * G
PROMPT_LEN = 3
COMPLETION_LENGTHS = [5, 2, 8, 3, 1, 6, 4, 7, 3, 8, 2, 5]
DR_GRPO_MAX_LEN = 10  # TRL max_completion_length = our max_len (GrpoUpdater: grpo.sampling.max_new_tokens + 1)
TRUNCATED_ROW = 4  # the one completion not ending in EOS (only matters with mask_truncated_completions)
REWARDS = [[1.0, -1.0, -1.0, -1.0], [0.5, 1.0, -0.25, 0.0], [1.0, 1.0, 1.0, 1.0]]

VOCAB = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(13)]
PAD_ID, EOS_ID = 0, 1

# TRL's advantages: (r - group mean) / (std + 1e-4) with std = trl.trainer.utils.nanstd, Bessel-corrected.
TRL_ADV = dict(adv_ddof=1, adv_eps=1e-4)
# TRL 1.16 multiplies the k3 KL by the importance ratio by default (use_bias_correction_kl=True, DeepSeek-V3.2); the
# GRPO / DeepSeekMath k3 KL, ours, is TRL's with it off.
PLAIN_KL = dict(use_bias_correction_kl=False)


def _case(name, ours, trl, expect="equal", why=None):
  """`ours`: the keyword arguments of losses.grpo_loss (mode, epsilon, epsilon_high, beta, kl, max_len) and of
  losses.group_advantages (adv_scale, adv_ddof, adv_eps); `trl`: the GRPOConfig arguments that should give the same
  numbers. `expect` says whether the two must agree, and if not how they differ (`why`)."""
  case = dict(name=name, ours={"kl": "k3", "epsilon_high": None, "max_len": None, **ours, **TRL_ADV},
              trl={**PLAIN_KL, **trl}, expect=expect)
  if why:
    case["why"] = why
  return case


ROW_DENOMINATOR = ("TRL's grpo / dr_grpo divide by all B rows (.mean() over rows; B * max_completion_length); ours "
                   "leaves rows without loss tokens out of the row count (losses.aggregate), so ours = TRL * B / "
                   "(rows with tokens)")
CASES = [
  _case("grpo_k3_group", dict(mode="seq_mean_token_mean", epsilon=0.2, beta=0.1, adv_scale="group"),
        dict(loss_type="grpo", epsilon=0.2, epsilon_high=None, beta=0.1, scale_rewards="group")),
  _case("grpo_clip_higher_no_kl",
        dict(mode="seq_mean_token_mean", epsilon=0.2, epsilon_high=0.28, beta=0.0, adv_scale="group"),
        dict(loss_type="grpo", epsilon=0.2, epsilon_high=0.28, beta=0.0, scale_rewards="group")),
  _case("bnpo_k3_batch_std", dict(mode="token_mean", epsilon=0.2, epsilon_high=0.28, beta=0.1, adv_scale="batch"),
        dict(loss_type="bnpo", epsilon=0.2, epsilon_high=0.28, beta=0.1, scale_rewards="batch")),
  _case("dapo_no_kl", dict(mode="token_mean", epsilon=0.2, epsilon_high=0.28, beta=0.0, adv_scale="group"),
        dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0, scale_rewards="group")),
  _case("dapo_k3", dict(mode="token_mean", epsilon=0.2, epsilon_high=0.28, beta=0.1, adv_scale="group"),
        dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.1, scale_rewards="group")),
  _case("dr_grpo_k3_no_std",
        dict(mode="seq_mean_token_sum_norm", epsilon=0.2, beta=0.1, adv_scale="none", max_len=DR_GRPO_MAX_LEN),
        dict(loss_type="dr_grpo", epsilon=0.2, epsilon_high=None, beta=0.1, scale_rewards="none",
             max_completion_length=DR_GRPO_MAX_LEN)),
  # A completion TRL masks out entirely (mask_truncated_completions): a row with no loss tokens.
  _case("bnpo_empty_row", dict(mode="token_mean", epsilon=0.2, epsilon_high=0.28, beta=0.1, adv_scale="group"),
        dict(loss_type="bnpo", epsilon=0.2, epsilon_high=0.28, beta=0.1, scale_rewards="group",
             mask_truncated_completions=True)),
  _case("grpo_empty_row", dict(mode="seq_mean_token_mean", epsilon=0.2, beta=0.1, adv_scale="group"),
        dict(loss_type="grpo", epsilon=0.2, epsilon_high=None, beta=0.1, scale_rewards="group",
             mask_truncated_completions=True),
        expect="row_denominator", why=ROW_DENOMINATOR),
  _case("dr_grpo_empty_row",
        dict(mode="seq_mean_token_sum_norm", epsilon=0.2, beta=0.1, adv_scale="none", max_len=DR_GRPO_MAX_LEN),
        dict(loss_type="dr_grpo", epsilon=0.2, epsilon_high=None, beta=0.1, scale_rewards="none",
             max_completion_length=DR_GRPO_MAX_LEN, mask_truncated_completions=True),
        expect="row_denominator", why=ROW_DENOMINATOR),
  # TRL's default KL: k3 times the (differentiable) importance ratio. Ours has no such option.
  _case("grpo_k3_is_weighted_kl", dict(mode="seq_mean_token_mean", epsilon=0.2, beta=0.1, adv_scale="group"),
        dict(loss_type="grpo", epsilon=0.2, epsilon_high=None, beta=0.1, scale_rewards="group",
             use_bias_correction_kl=True),
        expect="kl_importance_weighted",
        why="TRL's default use_bias_correction_kl=True multiplies the per-token k3 by pi/pi_old (value and "
            "gradient); ours is the plain k3 of GRPO / DeepSeekMath, i.e. TRL with use_bias_correction_kl=False"),
]


def make_inputs():
  rng = np.random.default_rng(20240611)
  T = max(COMPLETION_LENGTHS)
  mask = np.zeros((B, T), np.float32)
  for i, n in enumerate(COMPLETION_LENGTHS):
    mask[i, :n] = 1
  logp = -rng.uniform(0.05, 3.0, (B, T)).astype(np.float32)
  old = (logp + rng.normal(0.0, 0.35, (B, T))).astype(np.float32)
  ref = (logp + rng.normal(0.0, 0.5, (B, T))).astype(np.float32)
  # Junk (finite) in the padding: it must not reach the loss on either side.
  pad = mask == 0
  logp[pad], old[pad], ref[pad] = -7.0, -0.5, -3.0
  word = np.arange(3, len(VOCAB))
  prompt_ids = [list(rng.choice(word, PROMPT_LEN)) for _ in range(P) for _ in range(G)]
  completion_ids = []
  for i, n in enumerate(COMPLETION_LENGTHS):
    ids = [int(x) for x in rng.choice(word, n)]
    if i != TRUNCATED_ROW:
      ids[-1] = EOS_ID
    completion_ids.append(ids)
  return dict(logp=logp, old_logp=old, ref_logp=ref, mask=mask, rewards=np.asarray(REWARDS, np.float32),
              prompt_ids=[[int(x) for x in p] for p in prompt_ids], completion_ids=completion_ids)


class FixedLogProbs(torch.nn.Module):
  """Stands for a causal LM patched by TRL's `add_fused_lm_head`: `model(input_ids, attention_mask, labels=...,
  fused_lm_head=True)` returns per-position log-probs of the next token ([B, L - 1], position t scores label t + 1),
  here the chosen completion log-probs (an `nn.Parameter`, so TRL's loss can be differentiated with respect to
  them)."""

  def __init__(self, completion_logp: np.ndarray, completion_ids: list[list[int]]):
    super().__init__()
    self.logp = torch.nn.Parameter(torch.tensor(completion_logp))
    self.completion_ids = completion_ids

  def forward(self, input_ids, attention_mask, labels=None, fused_lm_head=False, **kwargs):
    assert fused_lm_head and labels is not None
    T = self.logp.shape[1]
    # TRL scores exactly the real completion tokens: check that the labels it built are ours.
    for i, ids in enumerate(self.completion_ids):
      got = labels[i, -T:].tolist()
      # -100 everywhere when TRL masked the whole completion (mask_truncated_completions).
      assert got in (ids + [-100] * (T - len(ids)), [-100] * T), (i, got, ids)
      assert bool((labels[i, :-T] == -100).all())
    prefix = torch.zeros(input_ids.shape[0], input_ids.shape[1] - 1 - T)
    log_probs = torch.cat([prefix, self.logp], dim=1)
    return types.SimpleNamespace(log_probs=log_probs, entropy=torch.zeros_like(log_probs), aux_loss=None)


def build_model_dir(root: Path) -> str:
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
  torch.manual_seed(0)
  cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                    pad_token_id=PAD_ID, eos_token_id=EOS_ID, bos_token_id=None)
  LlamaForCausalLM(cfg).save_pretrained(root)
  tokenizer.save_pretrained(root)
  return str(root)


def run_case(case, x, model_dir: str, out_dir: str):
  trl_kw = dict(case["trl"])
  args = GRPOConfig(
    output_dir=out_dir, use_cpu=True, bf16=False, fp16=False, report_to="none", seed=0,
    per_device_train_batch_size=B, num_generations=G, gradient_accumulation_steps=1, num_iterations=1,
    max_completion_length=trl_kw.pop("max_completion_length", max(COMPLETION_LENGTHS)),
    gradient_checkpointing=False, logging_steps=1, **trl_kw)

  def rollout_func(prompts, trainer):  # TRL's generation hook: fixed ids, in the order of the inputs
    assert len(prompts) == B
    return {"prompt_ids": x["prompt_ids"], "completion_ids": x["completion_ids"],
            "logprobs": [list(map(float, x["old_logp"][i, :n])) for i, n in enumerate(COMPLETION_LENGTHS)]}

  def fixed_reward(completions, reward, **kwargs):  # `reward` is a dataset column, one value per rollout
    return list(reward)

  rewards = x["rewards"].reshape(-1)
  rows = [{"prompt": f"prompt {i // G}", "reward": float(rewards[i])} for i in range(B)]
  trainer = GRPOTrainer(model=model_dir, reward_funcs=fixed_reward, args=args, train_dataset=Dataset.from_list(rows),
                        rollout_func=rollout_func)
  assert trainer.loss_type == case["trl"]["loss_type"]
  if trainer.beta != 0.0:
    trainer.ref_model = FixedLogProbs(x["ref_logp"], x["completion_ids"]).eval()
  trainer.model.train()
  trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop for each optimizer step

  batch = trainer._generate_and_score_completions(rows)
  mask = batch["completion_mask"].float()
  assert batch.get("old_per_token_logps") is None  # num_iterations=1: TRL would use the policy's own, detached
  batch["old_per_token_logps"] = torch.tensor(x["old_logp"])
  if trainer.beta != 0.0:
    assert torch.equal(batch["ref_per_token_logps"], torch.tensor(x["ref_logp"]))
  policy = FixedLogProbs(x["logp"], x["completion_ids"])
  for key in list(trainer._metrics["train"]):
    trainer._metrics["train"][key].clear()
  loss = trainer._compute_loss(policy, batch)
  loss.backward()
  m = trainer._metrics["train"]
  expected = dict(
    loss=float(loss.detach()),
    advantages=batch["advantages"].reshape(P, G).tolist(),
    mask=mask.tolist(),
    grad_logp=policy.logp.grad.tolist(),
    clip_ratio_low=m["clip_ratio/low_mean"][-1],
    clip_ratio_high=m["clip_ratio/high_mean"][-1],
    clip_ratio_region=m["clip_ratio/region_mean"][-1],
  )
  if trainer.beta != 0.0:
    expected["kl"] = m["kl"][-1]
  trl_settings = {k: getattr(trainer.args, k) for k in (
    "loss_type", "beta", "epsilon", "epsilon_high", "scale_rewards", "max_completion_length",
    "mask_truncated_completions", "num_generations", "gradient_accumulation_steps", "steps_per_generation",
    "num_iterations", "importance_sampling_level", "multi_objective_aggregation", "top_entropy_quantile",
    "use_bias_correction_kl", "delta", "off_policy_mask_threshold")}
  trl_settings["advantage_eps"] = 1e-4  # hard-coded in _generate_and_score_completions (std + 1e-4)
  trl_settings["advantage_std"] = "nanstd (Bessel, ddof=1)"
  out = {"name": case["name"], "ours": case["ours"], "trl": trl_settings, "expect": case["expect"],
         "expected": expected}
  if "why" in case:
    out["why"] = case["why"]
  return out


def main():
  x = make_inputs()
  with tempfile.TemporaryDirectory() as tmp:
    model_dir = build_model_dir(Path(tmp) / "tiny-llama")
    cases = [run_case(c, x, model_dir, str(Path(tmp) / "out")) for c in CASES]
  # TRL's clip metrics must show clipping on both sides, or the golden would not exercise the clip bounds.
  first = cases[0]["expected"]
  assert first["clip_ratio_low"] > 0 and first["clip_ratio_high"] > 0, first
  doc = {
    "generator": "tests/train/golden/make_grpo_trl.py",
    "versions": {"trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
                 "python": sys.version.split()[0]},
    "inputs": {
      "rewards": x["rewards"].tolist(), "group_size": G, "completion_lengths": COMPLETION_LENGTHS,
      "logp": x["logp"].tolist(), "old_logp": x["old_logp"].tolist(), "ref_logp": x["ref_logp"].tolist(),
      "mask": x["mask"].tolist(), "prompt_ids": x["prompt_ids"], "completion_ids": x["completion_ids"],
    },
    "cases": cases,
  }
  OUT.write_text(json.dumps(doc, indent=1) + "\n")
  for c in cases:
    e = c["expected"]
    print(f"{c['name']:24s} loss={e['loss']:+.8f} clip lo/hi={e['clip_ratio_low']:.3f}/{e['clip_ratio_high']:.3f} "
          f"kl={e.get('kl', float('nan')):.6f}")
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
