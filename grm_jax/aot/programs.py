"""Every jitted program a preset's stages run, at the preset's shapes, as (function, abstract arguments) pairs.

Nothing here re-implements a step: each program is built by the function the stage itself calls
(`make_train_step` + `rft.sft_loss_fn`, `GrpoUpdater`, `metarm.bce_loss_fn`, `sampling.generate.sampler_program`,
`grm.meta_rm.score_program`), and its arguments are `jax.ShapeDtypeStruct`s carrying the shardings the stage would
give the real arrays (params by the logical-axis rules, optimizer moments like their params, batches over
data x fsdp). So `jit(f).lower(*args).compile()` is the program the stage would run on that mesh.

Shapes the data decides at run time are taken at their bound: training rows at `max_len`, GRPO rows at the stage's
`row_length` of `prompt_len`, sampler prompts at `prompt_len` tokens. Sampler calls mirror `grm.judge`: an item
with n responses and k samples has min(k, n!) distinct shuffled prompts, each sampled ceil(k / distinct) times
(the expected largest count; a call's program uses the largest count among its prompts, so an unlucky draw of
permutations can be somewhat larger), at most `MAX_PROMPTS_PER_CALL` prompts per call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from grm_jax import parallel
from grm_jax.aot import cost
from grm_jax.grm import meta_rm
from grm_jax.models import weights
from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import LayerCaches
from grm_jax.sampling.params import sampling_shardings
from grm_jax.sampling.static import MAX_PROMPTS_PER_CALL, decode_program, sampler_program
from grm_jax.sampling.static import call_shape as sampler_call_shape
from grm_jax.stages import grpo as grpo_stage
from grm_jax.stages import metarm, rft
from grm_jax.train.grpo import GrpoConfig, GrpoUpdater
from grm_jax.train.optimizer import make_optimizer
from grm_jax.train.step import BATCH_NAMES, abstract_state, make_train_step

NUM_STOP_IDS = 2  # a chat model's end-of-turn and end-of-text tokens


@dataclasses.dataclass
class Program:
  """One jitted program of a stage with abstract arguments, and what it should cost."""

  name: str  # "<stage>/<program>", e.g. "rft/sft_step"
  fn: Any  # the jitted function
  args: tuple  # ShapeDtypeStructs with shardings
  shape: str  # the shapes in words, for the report
  flops: float  # analytic FLOPs of one call, all chips (cost.py states the rule)
  model_flops: float  # the useful part (no rematerialisation), for MFU
  hbm_bytes: float  # analytic HBM traffic of one call, per chip
  tokens: int  # tokens processed (training) or generated (sampling) per call
  must_bytes: float = 0.0  # decode step: weight and KV-cache bytes per chip the step must read
  twin: Callable[[int], Program] | None = None  # loop-free copy with this many layers (XLA's FLOP count)
  calls: int = 1  # calls per stage step (a sampler round of many prompts runs several calls)
  kind: str = "train"  # train | forward | sampler (which memory estimate applies)
  rows: int = 0  # rows of one micro-batch (train / forward) or of the decode (sampler)
  length: int = 0  # tokens per row (train / forward) or own KV slots per row (sampler: new tokens)
  prefix_tokens: int = 0  # sampler: prompt tokens of all its prompts (their KV cache is shared by their rows)
  cfg: ModelConfig | None = None
  param_args: Any = None  # the params among `args` (their gradient accumulator is a temporary)
  # What the stage keeps on the device while this program runs, beyond its arguments ({what: abstract tree}): e.g.
  # the GRPO sampler runs beside the Adam moments and the KL reference. A fit counts them.
  resident: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Plan:
  """What the programs need: the config, the architecture, the mesh and the sizes the data would decide."""

  config: Any
  cfg: ModelConfig
  mesh: Any
  rules: tuple
  prompt_len: int  # tokens of the longest judging prompt
  responses: int = 2  # n of the items (pairs by default)

  @property
  def chips(self) -> int:
    return self.mesh.devices.size

  def params(self, cfg: ModelConfig | None = None):
    cfg = cfg or self.cfg
    shapes, names = weights.abstract_params(cfg)
    shardings = parallel.tree_shardings(names, shapes, self.mesh, self.rules)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)

  def array(self, shape, dtype, names=()):
    names = (tuple(names) + (None,) * len(shape))[: len(shape)]
    return jax.ShapeDtypeStruct(shape, dtype, sharding=parallel.named_sharding(self.mesh, names, self.rules, shape))

  def replicated(self, shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(self.mesh, PartitionSpec()))

  def batch(self, shape, dtype):
    return self.array(shape, dtype, BATCH_NAMES)


def _micro(group, rows_key: str = "batch_size") -> tuple[int, int]:
  m = int(group.micro_batches)
  return m, int(group[rows_key]) // m


def _layer_twin(plan: Plan, build: Callable[[Plan], Program]) -> Callable[[int], Program]:
  """(layers) -> the same program on a loop-free copy of the model: `layers` layers (the architecture's own
  pattern), every scan unrolled, one micro-batch. XLA's cost analysis counts a loop body once, so the step's FLOPs
  are measured on two such copies and extrapolated in depth (cost.extrapolate)."""

  def twin(layers: int) -> Program:
    kinds = plan.cfg.layer_types[:layers] if plan.cfg.layer_types else ()
    cfg = plan.cfg.replace(num_layers=layers, layer_types=kinds, unroll_scans=True)
    return build(dataclasses.replace(plan, cfg=cfg), micro_batches=1)

  return twin


# --------------------------------------------------------------------------------------------------- training


def _fit_step(plan: Plan, name: str, g, loss_fn, params, extra, micro_batches, head: bool = True,
              twin=None) -> Program:
  """A supervised step of group `g` (batch_size / micro_batches rows of max_len tokens) as the stage builds it:
  `make_train_step(loss_fn, AdamW)`; `extra(m, b)` adds the loss's own [M, b] inputs to tokens and mask."""
  m, b = _micro(g)
  m = micro_batches or m
  t = int(g.max_len)
  optimizer, schedule = make_optimizer(g.optim, 1000)
  fn = make_train_step(loss_fn, optimizer, schedule, compute_dtype=plan.cfg.dtype)
  batch = {"tokens": plan.batch((m, b, t), jnp.int32), "mask": plan.batch((m, b, t), jnp.bool_), **extra(m, b, t)}
  flops, model_flops = cost.train_flops(plan.cfg, m * b, t, head=head)
  return Program(name, fn, (abstract_state(params, optimizer), batch), f"{m} x {b} rows x {t} tokens", flops,
                 model_flops, cost.train_bytes(plan.cfg, params, optimizer, m, plan.mesh), m * b * t,
                 twin=twin if micro_batches is None else None, rows=b, length=t, cfg=plan.cfg, param_args=params)


def sft_step(plan: Plan, micro_batches: int | None = None) -> Program:
  g = plan.config.rft
  return _fit_step(plan, "rft/sft_step", g, rft.sft_loss_fn(plan.cfg, g, plan.mesh, plan.rules), plan.params(),
                   lambda m, b, t: {"loss_mask": plan.batch((m, b, t), jnp.float32)}, micro_batches,
                   twin=_layer_twin(plan, sft_step))


def _grpo_shapes(plan: Plan) -> tuple[int, int, int]:
  g = plan.config.grpo
  rows = int(g.prompts_per_step) * int(g.group_size)
  m = int(g.micro_batches)
  return m, rows // m, grpo_stage.row_length(plan.prompt_len, int(g.max_new_tokens))


def _grpo_resident(plan: Plan, parts: tuple[str, ...]) -> dict[str, Any]:
  """The GRPO stage's device arrays beside a program's arguments: "params" (f32 masters), "moments" (the optimizer
  state) and, when beta > 0, "reference" (the frozen KL reference in compute dtype, `train.grpo.reference_params`;
  in host memory with `grpo.reference_on_host`, on the device only as the reference forward's argument)."""
  params = plan.params()
  state = abstract_state(params, make_optimizer(plan.config.grpo.optim, 1000)[0])
  out = {"params": params, "moments": state.opt_state}
  gc = GrpoConfig.from_config(plan.config.grpo)
  if gc.has_kl and not gc.reference_on_host:
    out["reference"] = _compute_copy(plan, params)
  return {k: out[k] for k in parts if k in out}


def _compute_copy(plan: Plan, params):
  return _like(jax.eval_shape(functools.partial(weights.for_compute, plan.cfg), params), params)


def _grpo_updater(plan: Plan):
  g = plan.config.grpo
  optimizer, schedule = make_optimizer(g.optim, int(g.steps))
  return GrpoUpdater(plan.cfg, GrpoConfig.from_config(g), optimizer, schedule, plan.mesh, plan.rules), optimizer


def grpo_step(plan: Plan, micro_batches: int | None = None) -> Program:
  m, b, t = _grpo_shapes(plan)
  m = micro_batches or m
  updater, optimizer = _grpo_updater(plan)
  params = plan.params()
  batch = {"tokens": plan.batch((m, b, t), jnp.int32), "mask": plan.batch((m, b, t), jnp.bool_),
           "loss_mask": plan.batch((m, b, t), jnp.float32), "advantages": plan.batch((m, b), jnp.float32)}
  if updater.detached_old:
    batch.update(sampler_logp=plan.batch((m, b, t), jnp.float32), sampler_mask=plan.batch((m, b, t), jnp.float32))
  else:
    batch["old_logp"] = plan.batch((m, b, t), jnp.float32)
  if updater.g.has_kl:
    batch["ref_logp"] = plan.batch((m, b, t), jnp.float32)
  flops, model_flops = cost.train_flops(plan.cfg, m * b, t)
  return Program("grpo/step", updater.train_step, (abstract_state(params, optimizer), batch),
                 f"{m} x {b} rollouts x {t} tokens", flops, model_flops,
                 cost.train_bytes(plan.cfg, params, optimizer, m, plan.mesh), m * b * t,
                 twin=_layer_twin(plan, grpo_step) if micro_batches is None else None, rows=b, length=t,
                 cfg=plan.cfg, param_args=params, resident=_grpo_resident(plan, ("reference",)))


def grpo_reference(plan: Plan) -> Program:
  """Reference log-probs (the KL term), one forward per step from the frozen reference in compute dtype."""
  m, b, t = _grpo_shapes(plan)
  updater, _ = _grpo_updater(plan)
  params = plan.params()
  ref = _compute_copy(plan, params)
  batch = {"tokens": plan.batch((m, b, t), jnp.int32), "mask": plan.batch((m, b, t), jnp.bool_)}
  flops = cost.forward_flops(plan.cfg, m * b, t)
  return Program("grpo/reference_logprobs", updater.logp, (ref, batch), f"{m} x {b} rollouts x {t} tokens", flops,
                 flops, cost.forward_bytes(plan.cfg, ref, m, plan.mesh), m * b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg, resident=_grpo_resident(plan, ("params", "moments")))


def _like(abstract, shardings_of):
  """ShapeDtypeStructs of `abstract` with the shardings of the same leaves in `shardings_of`."""
  return jax.tree.map(lambda a, b: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=b.sharding), abstract,
                      shardings_of)


def metarm_step(plan: Plan, micro_batches: int | None = None) -> Program:
  params = _meta_params(plan)
  return _fit_step(plan, "metarm/step", plan.config.metarm, metarm.bce_loss_fn(plan.cfg, plan.mesh, plan.rules),
                   params, lambda m, b, t: {"label": plan.batch((m, b), jnp.float32),
                                            "weight": plan.batch((m, b), jnp.float32)}, micro_batches, head=False)


def metarm_states(plan: Plan) -> Program:
  """`metarm.method="probe"`: one forward pass giving each row's head input at every depth (no training step)."""
  m = plan.config.metarm
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  b, t = -(-int(m.batch_size) // shards) * shards, int(m.max_len)
  params = plan.params()
  args = (params, plan.array((b, t), jnp.int32, ("activation_batch", "activation_length")),
          plan.array((b, t), jnp.bool_, ("activation_batch", "activation_length")))
  flops = cost.forward_flops(plan.cfg, b, t, head=False)
  return Program("metarm/states", meta_rm.depth_program(plan.cfg), args, f"{b} rows x {t} tokens", flops, flops,
                 cost.forward_bytes(plan.cfg, params, 1, plan.mesh), b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg)


def _meta_params(plan: Plan):
  return {"decoder": plan.params(), "head": {"kernel": plan.replicated((plan.cfg.hidden_size,), jnp.float32),
                                             "bias": plan.replicated((), jnp.float32)}}


def _eval_resident(plan: Plan, meta: bool = True) -> dict[str, Any]:
  """The evaluation stage's device arrays beside a program's: the meta RM (loaded before judging) while the GRM
  samples, the GRM's params while the meta RM scores, and the base weights when a trained policy is compared with
  a baseline (`eval.baseline`), and a trained baseline's params while it judges. Evaluation loads every model in
  compute dtype (`plan` is built that way)."""
  e, out = plan.config.eval, {}
  if meta and str(e.meta_model):
    out["meta RM"] = _meta_params(plan)
  if not meta:
    out["GRM params"] = plan.params()
  baselines = [b.strip() for b in str(e.get("baseline", "") or "").split(",") if b.strip() not in ("", str(e.policy))]
  if baselines and str(e.policy) != "base":
    out["base params"] = plan.params()
  if any(b != "base" for b in baselines):  # a trained baseline ("rft") is restored beside the base weights
    out["baseline params"] = plan.params()
  return out


def meta_scores(plan: Plan) -> Program:
  """MetaRM@k at evaluation: one forward of the meta RM per batch of (prompt, judgement) sequences."""
  e = plan.config.eval
  t = int(plan.config.metarm.max_len) if "metarm" in plan.config else 1024
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  b = -(-int(e.meta_batch_size) // shards) * shards
  params = _meta_params(plan)
  fn = meta_rm.score_program(plan.cfg, plan.mesh, plan.rules)
  args = (params, plan.array((b, t), jnp.int32, ("activation_batch", "activation_length")),
          plan.array((b, t), jnp.bool_, ("activation_batch", "activation_length")))
  flops = cost.forward_flops(plan.cfg, b, t, head=False)
  return Program("eval/meta_scores", fn, args, f"{b} rows x {t} tokens", flops, flops,
                 cost.forward_bytes(plan.cfg, params, 1, plan.mesh), b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg, resident=_eval_resident(plan, meta=False))


# --------------------------------------------------------------------------------------------------- sampling


@dataclasses.dataclass(frozen=True)
class CallShape:
  prompts: int  # distinct prompts in one call (rows of the prefill)
  n: int  # samples per prompt
  prompt_len: int  # padded prompt tokens
  max_new: int
  calls: int  # calls per round of `items` items

  @property
  def rows(self) -> int:
    return self.prompts * self.n


def call_shape(plan: Plan, items: int, k: int, max_new: int) -> CallShape:
  distinct_per_item = min(k, math.factorial(plan.responses))
  n = -(-k // distinct_per_item)
  prompts = items * distinct_per_item
  per_call = min(prompts, MAX_PROMPTS_PER_CALL)
  batch, plen = sampler_call_shape(per_call, n, plan.prompt_len, plan.mesh)
  return CallShape(batch, n, plen, max_new, -(-prompts // per_call))


def sampler(plan: Plan, name: str, items: int, k: int, max_new: int,
            resident: Callable[[Plan], dict] | None = None, rounds: int = 1) -> Program:
  """The whole sampler call (prefill, then the decode while-loop) as `sampling.generate` compiles it, for `items`
  items per round (`grm.judge`'s batch_items) and `rounds` rounds per stage step."""
  s = call_shape(plan, items, k, max_new)
  fn = sampler_program(plan.cfg, plan.mesh, plan.rules, s.prompts, s.prompt_len, s.n, max_new, 0, False,
                                False, NUM_STOP_IDS)
  names = ("activation_batch", "activation_length")
  args = (plan.params(), plan.array((s.prompts, s.prompt_len), jnp.int32, names),
          plan.array((s.prompts, s.prompt_len), jnp.bool_, names),
          plan.array((s.rows, 2), jnp.uint32, ("activation_batch", None)),
          plan.replicated((), jnp.float32), plan.replicated((), jnp.float32),
          plan.replicated((NUM_STOP_IDS,), jnp.int32), plan.array((s.rows,), jnp.bool_, ("activation_batch",)))
  flops = cost.sampler_flops(plan.cfg, s)
  return Program(name, fn, args, f"{s.prompts} prompts x {s.prompt_len} tokens, n={s.n}, {max_new} new",
                 flops, flops, cost.sampler_bytes(plan.cfg, s, plan.mesh), s.rows * max_new, calls=s.calls * rounds,
                 kind="sampler", rows=s.rows, length=max_new, prefix_tokens=s.prompts * s.prompt_len, cfg=plan.cfg,
                 resident=resident(plan) if resident else {})


def decode_step(plan: Plan, name: str, items: int, k: int, max_new: int,
                resident: Callable[[Plan], dict] | None = None) -> Program:
  """One step of that sampler's decode loop, alone: what each generated token costs in bytes and FLOPs."""
  s = call_shape(plan, items, k, max_new)
  cfg = plan.cfg
  # The loop reads the params as `sampling_params` leaves them: compute dtype, whole on every data / fsdp shard.
  abstract = jax.eval_shape(functools.partial(weights.for_compute, cfg), plan.params())
  params = jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract,
                        sampling_shardings(cfg, plan.mesh, plan.rules))
  top = {k_: v for k_, v in params.items() if k_ != "layers"}

  def one_layer(a):
    spec = tuple(a.sharding.spec) + (None,) * (len(a.shape) - len(a.sharding.spec))
    return jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=NamedSharding(plan.mesh, PartitionSpec(*spec[1:])))

  layers = [jax.tree.map(one_layer, params["layers"]) for _ in range(cfg.num_layers)]
  dt = jnp.dtype(cfg.cache_dtype or cfg.dtype)
  kvh, hd = cfg.num_kv_heads, cfg.head_dim
  cache_names = ("cache_batch", "cache_heads", None, None)
  cache = LayerCaches(
    k=tuple(plan.array((s.rows, kvh, hd, max_new), dt, cache_names) for _ in range(cfg.num_layers)),
    v=tuple(plan.array((s.rows, kvh, max_new, hd), dt, cache_names) for _ in range(cfg.num_layers)),
    valid=plan.array((s.rows, max_new), jnp.bool_, ("cache_batch",)),
    index=plan.replicated((), jnp.int32),
    prefix_k=tuple(plan.array((s.prompts, kvh, hd, s.prompt_len), dt, cache_names) for _ in range(cfg.num_layers)),
    prefix_v=tuple(plan.array((s.prompts, kvh, s.prompt_len, hd), dt, cache_names) for _ in range(cfg.num_layers)),
    prefix_valid=plan.array((s.prompts, s.prompt_len), jnp.bool_, ("cache_batch",)),
  )
  rows = ("activation_batch",)
  args = (top, layers, plan.array((s.rows,), jnp.int32, rows), plan.array((s.rows,), jnp.int32, rows), cache)
  fn = decode_program(cfg, plan.mesh, plan.rules)
  flops = cost.decode_flops(cfg, s)
  must = cost.decode_must_bytes(cfg, s, params, plan.mesh)
  # The loop reads a copy of the leaves whose dtype or sharding `sampling_params` changes; the originals stay.
  resident = resident(plan) if resident else {}
  originals = [a for a, c in zip(jax.tree.leaves(plan.params()), jax.tree.leaves(params), strict=True)
               if a.dtype != c.dtype or a.sharding != c.sharding]
  if originals and "params" not in resident:
    resident["params (as stored)"] = originals
  return Program(name, fn, args, f"{s.rows} rows, {s.prompt_len} prefix + {max_new} own slots", flops, flops, must,
                 s.rows, must_bytes=must, kind="decode", rows=s.rows, length=max_new, cfg=cfg, resident=resident)


# --------------------------------------------------------------------------------------------------- the preset


def stage_programs(plan: Plan, decode_steps: bool = True) -> list[Callable[[], Program]]:
  """Builders (called lazily: building a 27B program's arguments is cheap, compiling it is not) for every program
  the config's stages run, in stage order."""
  c, out = plan.config, []
  stages = tuple(c.stages)

  def add(fn, *args, on: Plan = plan, **kw):
    out.append(lambda: fn(on, *args, **kw))

  if "rft" in stages:
    if not str(c.rft.sampler):  # the trained model samples its own trajectories
      add(sampler, "rft/sample", int(c.rft.batch_items), int(c.rft.num_samples), int(c.rft.max_new_tokens))
    add(sft_step)
  if "grpo" in stages:
    g = c.grpo
    per_call = grpo_stage.items_per_call(g)
    shape = (per_call, int(g.group_size), int(g.max_new_tokens))
    beside = functools.partial(_grpo_resident, parts=("moments", "reference"))
    add(sampler, "grpo/rollouts", *shape, resident=beside, rounds=-(-int(g.prompts_per_step) // per_call))
    if decode_steps:
      add(decode_step, "grpo/decode_step", *shape, resident=beside)
    if GrpoConfig.from_config(g).has_kl:
      add(grpo_reference)
    add(grpo_step)
  if "metarm" in stages:
    m = c.metarm
    if int(m.samples_per_item) > 0:
      # A trained policy's params are restored beside the base weights the meta RM starts from.
      beside = (lambda p: {"base params": p.params()}) if str(m.policy) != "base" else None
      add(sampler, "metarm/sample", int(m.batch_items), int(m.samples_per_item), int(m.max_new_tokens),
          resident=beside)
    add(metarm_states if str(m.method) == "probe" else metarm_step)
  if "evaluate" in stages:
    e = c.eval
    ev = dataclasses.replace(plan, cfg=plan.cfg.replace(param_dtype=plan.cfg.dtype))  # loaded in compute dtype
    shape = (int(e.batch_items), int(e.k), int(e.max_new_tokens))
    add(sampler, "eval/judge", *shape, on=ev, resident=_eval_resident)
    if decode_steps:
      add(decode_step, "eval/decode_step", *shape, on=ev, resident=_eval_resident)
    if str(e.meta_model):
      add(meta_scores, on=ev)
  return out
