"""One GRPO update from a batch of scored rollouts (paper §3.2, Eq. 15), shared by the stage and the toy tests.

Given rollouts (prompt + completion tokens), their ±1 rewards per group and the sampler's log-probs:
1. advantages per group (`losses.group_advantages`: z-score with a std guard, or Dr.GRPO's centring);
2. old log-probs from the trainer at the current params and reference log-probs from the frozen reference, both at
   the sampling temperature (the same distribution the sampler drew from, so the ratio starts at 1); with one
   inner update the old log-probs are the step's own, detached (as TRL does), which saves a forward pass;
3. `inner_updates` (mu) optimizer steps of the clipped surrogate + beta * KL on the same rollouts, old log-probs
   fixed, through the accumulated train step (`step.make_train_step`).
Logged with the step: reward mean, accuracy, fraction of zero-variance groups, clip fraction, KL, entropy,
response length, and mean |logp_sampler - logp_trainer| (the sampler/trainer agreement, as verl and TRL log it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from grm_jax import parallel, seeds
from grm_jax.models import lora, weights
from grm_jax.train import losses, settings
from grm_jax.train.batching import pack
from grm_jax.train.logprobs import token_logprobs
from grm_jax.train.step import make_train_step, place_batch, split_micro_batches


def _logp_program(cfg, temperature: float):
  """jit(params, batch [M, b, T]) -> log-probs [M, b, T] at the completion tokens (`loss_mask`; 0 where no chunk
  needed the head), bound to the current mesh scope."""
  def run(params, batch):
    def body(_, mb):
      return None, token_logprobs(cfg, params, mb["tokens"], mb["mask"], temperature, needed=mb["loss_mask"])[0]

    return jax.lax.scan(body, None, {k: batch[k] for k in ("tokens", "mask", "loss_mask")})[1]

  return parallel.bound(jax.jit(run))


@dataclasses.dataclass
class HostReference:
  """The frozen reference kept in host memory (`grpo.reference_on_host`): on the accelerator only for its one
  forward per step, so the policy's update has the reference's share of device memory to itself."""

  arrays: Any  # numpy arrays, compute dtype
  shardings: Any  # where each goes for the forward

  def on_device(self):
    return jax.device_put(self.arrays, self.shardings)


@dataclasses.dataclass(frozen=True)
class GrpoConfig:
  """The GRPO update's settings, typed and checked once (`from_config`); the values and their meaning live in
  `configs.grpo()`, the one place with defaults."""

  temperature: float
  epsilon: float
  epsilon_high: float  # 0: symmetric clip
  beta: float
  kl: str
  loss_agg: str
  adv_scale: str
  adv_ddof: int
  adv_eps: float
  inner_updates: int
  micro_batches: int
  max_new_tokens: int
  reference_on_host: bool

  @classmethod
  def from_config(cls, g: Mapping[str, Any]) -> GrpoConfig:
    """From the `grpo` config group (or any mapping with its keys); a bad value fails here, naming the key. The
    rollouts' temperature and length come from its `sampling` subgroup (the same the sampler reads)."""
    if "sampling" not in g:
      raise ValueError("config grpo: missing key(s) ['sampling']")
    rollouts = g["sampling"]
    out = settings.read(cls, g, "grpo", temperature=float(rollouts["temperature"]),
                        max_new_tokens=int(rollouts["max_new_tokens"]))
    settings.check("grpo.sampling", (
      (out.temperature > 0, "temperature", out.temperature, "GRPO needs sampled rollouts (temperature > 0)"),
      (out.max_new_tokens >= 1, "max_new_tokens", out.max_new_tokens, "at least 1"),
    ))
    settings.check("grpo", (
      (out.epsilon > 0, "epsilon", out.epsilon, "the clip range must be > 0"),
      (out.epsilon_high >= 0, "epsilon_high", out.epsilon_high, "must be >= 0 (0 = symmetric clip)"),
      (out.beta >= 0, "beta", out.beta, "the KL weight must be >= 0"),
      (out.kl in losses.KL_KINDS, "kl", out.kl, f"choose one of {losses.KL_KINDS}"),
      (out.loss_agg in losses.AGG_MODES, "loss_agg", out.loss_agg, f"choose one of {losses.AGG_MODES}"),
      (out.adv_scale in losses.ADV_SCALES, "adv_scale", out.adv_scale, f"choose one of {losses.ADV_SCALES}"),
      (out.adv_ddof in (0, 1), "adv_ddof", out.adv_ddof, "0 (population std) or 1 (sample std)"),
      (out.inner_updates >= 1, "inner_updates", out.inner_updates, "at least one optimizer step per batch"),
      (out.micro_batches >= 1, "micro_batches", out.micro_batches, "at least 1"),
    ))
    return out

  @property
  def has_kl(self) -> bool:
    """Whether the loss has a KL term, hence whether a frozen reference is kept at all: decided here only."""
    return self.beta > 0


def reference_params(cfg, params, grpo: GrpoConfig):
  """The frozen KL reference: None without a KL term (nothing kept), else `params` as the decoder reads them
  (`weights.for_compute`: bf16 weights give exactly the log-probs of f32 masters, at half the memory). The copy owns
  its buffers: the train step donates (overwrites) the policy's. `grpo.reference_on_host`: a `HostReference`.
  Under LoRA the reference is the base model itself: `params` with every adapter's B at zero (`lora.adapters_off`),
  which shares the frozen base weights, so no second copy of the model is kept (on the device or the host)."""
  if not grpo.has_kl:
    return None
  if cfg.lora.rank:
    return lora.adapters_off(params)
  on_host = grpo.reference_on_host
  ref = jax.tree.map(lambda a, c: jnp.copy(a) if c is a else c, params, weights.for_compute(cfg, params))
  if not on_host:
    return ref
  if jax.process_count() > 1:
    raise ValueError("config grpo.reference_on_host=True needs a single process (each host would hold the whole "
                     "reference); keep it on the devices on a multi-host slice, where fsdp shards it")
  return HostReference(jax.device_get(ref), jax.tree.map(lambda a: a.sharding, ref))


class GrpoUpdater:
  """Holds the compiled programs of one GRPO configuration (`GrpoConfig`), on the mesh scope it is made in."""

  def __init__(self, cfg, g: GrpoConfig, optimizer, schedule, frozen=None, seed: int = 0):
    """`frozen`: the base weights under LoRA (`models.lora.split`), read by every forward and never updated; the
    train state then holds the adapters only. `seed`: the run's, for the train step's dropout keys (LoRA dropout;
    with one inner update the detached old log-probs carry the same masks, so the ratio stays 1)."""
    self.cfg, self.g, self.scope, self.frozen = cfg, g, parallel.scope(), frozen
    self.logp = _logp_program(cfg, g.temperature)
    # One inner update: old log-probs are the loss's own forward, detached (no separate pass). A test turns this off
    # to check both paths give the same update.
    self.detached_old = g.inner_updates == 1
    self.train_step = make_train_step(self._loss_fn, optimizer, schedule, compute_dtype=cfg.dtype,
                                      rng_seed=seeds.seed_for(seed, "lora_dropout"))

  def _loss_fn(self, params, mb):
    g = self.g
    logp, ent = token_logprobs(self.cfg, params, mb["tokens"], mb["mask"], g.temperature, rng=mb.get("rng"),
                               needed=mb["loss_mask"])
    old = mb.get("old_logp")
    extra = {}
    if old is None:  # one inner update: the params that sampled are these params
      old = jax.lax.stop_gradient(logp)
      sm = mb["sampler_mask"]
      extra["logp_diff_sampler_trainer"] = losses.Weighted(jnp.sum(jnp.abs(old - mb["sampler_logp"]) * sm), jnp.sum(sm))
    loss, metrics = losses.grpo_loss(
      logp, old, mb.get("ref_logp"), mb["advantages"], mb["loss_mask"], epsilon=g.epsilon,
      epsilon_high=g.epsilon_high or None, beta=g.beta, kl=g.kl, mode=g.loss_agg, max_len=g.max_new_tokens + 1,
    )
    metrics["entropy"] = losses.aggregate(ent, mb["loss_mask"], "token_mean")
    return loss, {**metrics, **extra}

  def params(self, state):
    """The whole param tree the policy runs on: the state's (trained) params joined with the frozen ones."""
    return lora.join(state.params, self.frozen)

  def update(self, state, ref_params, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
             sampler_logp: Sequence[Sequence[float]], rewards: np.ndarray, *, pad_id: int, max_len: int,
             length: int | None = None):
    """rewards float [P, G] (±1); prompts / completions / sampler_logp are the P*G rollouts in group order.
    `sampler_logp[i]` may be shorter than `completions[i]` (the stop token's log-prob is not returned).
    `length` fixes the row length (one compiled program for the run); a longer batch falls back to its bucket."""
    g = self.g
    rewards = np.asarray(rewards, np.float32)
    adv = np.asarray(losses.group_advantages(jnp.asarray(rewards), ddof=g.adv_ddof, scale=g.adv_scale,
                                             eps=g.adv_eps)).reshape(-1)
    lengths = [len(c) for c in completions]
    longest = max(len(p) + len(c) for p, c in zip(prompts, completions, strict=True))
    length = length if length is not None and length >= longest else None
    batch, _ = pack(prompts, completions, pad_id=pad_id, max_len=max_len, length=length,
                    values={"sampler_logp": sampler_logp, "sampler_mask": [[1.0] * len(lp) for lp in sampler_logp]})
    batch["advantages"] = adv.astype(np.float32)
    micro = g.micro_batches
    with parallel.use_mesh(*self.scope):
      dev = place_batch(split_micro_batches(batch, micro))
    train = {k: dev[k] for k in ("tokens", "mask", "loss_mask", "advantages")}
    diagnostics = {}
    if self.detached_old:
      train.update(sampler_logp=dev["sampler_logp"], sampler_mask=dev["sampler_mask"])
    else:
      old = self.logp(self.params(state), dev)
      sm = batch["sampler_mask"].reshape(old.shape)
      diff = np.abs(np.asarray(old) - batch["sampler_logp"].reshape(old.shape))
      train["old_logp"] = old
      diagnostics = {"logp_diff_sampler_trainer": float((diff * sm).sum() / max(sm.sum(), 1.0)),
                     "logp_diff_sampler_trainer_max": float((diff * sm).max())}
    if g.has_kl:
      ref = ref_params.on_device() if isinstance(ref_params, HostReference) else ref_params
      train["ref_logp"] = self.logp(ref, dev)
      del ref  # a host reference leaves the device before the update
    metrics, skipped = {}, 0.0
    for _ in range(g.inner_updates):
      state, metrics = self.train_step(state, train, self.frozen)
      skipped = max(skipped, float(metrics["skipped"]))
    out = {k: float(v) for k, v in metrics.items()}
    out["skipped"] = skipped
    out.update({
      "reward_mean": float(rewards.mean()),
      "accuracy": float((rewards > 0).mean()),
      "zero_variance_groups": float(losses.zero_variance_fraction(jnp.asarray(rewards))),
      "response_length": float(np.mean(lengths)),
      **diagnostics,
    })
    return state, out
