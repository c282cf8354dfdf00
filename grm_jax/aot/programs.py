"""Every jitted program a preset's stages run, at the preset's shapes, as (function, abstract arguments) pairs.

Nothing here re-implements a step: each program is built by the function the stage itself calls
(`make_train_step` + `rft.sft_loss_fn`, `GrpoUpdater`, `metarm.bce_loss_fn`, the continuous engine's
`sampling.engine.insert_program` and `step_program`, `judges.scalar_rm.score_program`), and its arguments are
`jax.ShapeDtypeStruct`s carrying the shardings the stage would give the real arrays (params by the logical-axis
rules, optimizer moments like their params, batches over data x fsdp, the sampler's weights as `sampling.params.place`
leaves them, the engine's state as its `init_program` shards it). So `jit(f).lower(*args).compile()` is the program
the stage would run on that mesh. Every builder runs under the plan's mesh scope (`Plan.scope`), so the programs are
bound to it (`parallel.bound`) and lower on that mesh whoever calls them. The one program built here is the engine's
decode iteration alone (`engine_decode_program`: the model call of its loop body), compiled to count what a
generated token moves.

Shapes the data decides at run time are taken at their bound: training rows at `max_len`, GRPO rows at the stage's
`row_length` of `prompt_len`, sampler prompts at `prompt_len` tokens. Sampler calls mirror `judges.judge`: an item
with n responses and k samples has min(k, n!) distinct shuffled prompts, each sampled ceil(k / distinct) times
(the expected largest count; an unlucky draw of permutations gives some prompts more), all of a round's prompts
in one `generate` call, whose engine `choose_layout` sizes (at most `generate.MAX_ROWS` row slots, more only to
give every data x fsdp shard a prefix slot).
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

from grm_jax import judges, parallel
from grm_jax.aot import cost
from grm_jax.buckets import batch_bucket
from grm_jax.judges import scalar_rm
from grm_jax.models import lora, weights
from grm_jax.models.config import ModelConfig
from grm_jax.models.decoder import decode_step as model_decode_step
from grm_jax.sampling import engine
from grm_jax.sampling.generate import MAX_ROWS
from grm_jax.sampling.params import sampling_shardings
from grm_jax.stages import btrm as btrm_stage
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
  tokens: int  # tokens processed (training, forward, the engine's insert: prompt tokens) or generated per call
  must_bytes: float = 0.0  # decode step: weight and KV-cache bytes per chip the step must read
  twin: Callable[[int], Program] | None = None  # loop-free copy with this many layers (XLA's FLOP count)
  calls: int = 1  # calls per stage step (a sampler round of many prompts runs several inserts and steps)
  kind: str = "train"  # train | forward | insert | step | decode (which memory estimate applies)
  rows: int = 0  # rows of one micro-batch (train / forward), prompts of an insert, row slots of a step / decode
  length: int = 0  # tokens per row (train / forward / insert) or own KV slots per row (step / decode: new tokens)
  cfg: ModelConfig | None = None
  param_args: Any = None  # the params among `args` (training: their gradient accumulator is a temporary; the
  # engine's step: its layers are sliced apart, copied, before the loop)
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

  def scope(self):
    """`parallel.use_mesh` of the plan's mesh and rules."""
    return parallel.use_mesh(self.mesh, self.rules)

  def params(self, cfg: ModelConfig | None = None):
    """The param tree as the stages hold it: under LoRA (`cfg.lora.rank` > 0) the base weights in the compute dtype
    (`plan_for` sets `param_dtype` so) and the float32 adapters beside each target projection."""
    cfg = cfg or self.cfg
    shapes, names = weights.abstract_params(cfg)
    with self.scope():
      shardings = parallel.tree_shardings(names, shapes)
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)

  def array(self, shape, dtype, names=()):
    names = (tuple(names) + (None,) * len(shape))[: len(shape)]
    with self.scope():
      return jax.ShapeDtypeStruct(shape, dtype, sharding=parallel.named_sharding(names, shape))

  def replicated(self, shape, dtype):
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(self.mesh, PartitionSpec()))

  def batch(self, shape, dtype):
    return self.array(shape, dtype, BATCH_NAMES)

  def adapters(self):
    """What one more set of adapters on the same base costs (LoRA): `params`' adapters alone."""
    return lora.split(self.params(), self.cfg.lora, trained_roots=())[0]


def _on_plan(build: Callable[..., Program]) -> Callable[..., Program]:
  """A program builder run under its plan's mesh scope: what it builds is bound to the plan's mesh."""

  @functools.wraps(build)
  def run(plan: Plan, *args, **kwargs) -> Program:
    with plan.scope():
      return build(plan, *args, **kwargs)

  return run


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
  `make_train_step(loss_fn, AdamW)`; `extra(m, b)` adds the loss's own [M, b] inputs to tokens and mask. Under LoRA
  the state holds the trained part (`lora.split`: the adapters, and a scalar head) and its moments; the frozen base
  is the step's third argument, as `train.fit` passes it."""
  m, b = _micro(g)
  m = micro_batches or m
  t = int(g.max_len)
  optimizer, schedule = make_optimizer(g.optim, 1000)
  fn = make_train_step(loss_fn, optimizer, schedule, compute_dtype=plan.cfg.dtype)
  batch = {"tokens": plan.batch((m, b, t), jnp.int32), "mask": plan.batch((m, b, t), jnp.bool_), **extra(m, b, t)}
  flops, model_flops = cost.train_flops(plan.cfg, m * b, t, head=head)
  trained, frozen = lora.split(params, plan.cfg.lora)
  return Program(name, fn, (abstract_state(trained, optimizer), batch, *_frozen_arg(frozen)),
                 f"{m} x {b} rows x {t} tokens", flops, model_flops,
                 cost.train_bytes(plan.cfg, trained, optimizer, m), m * b * t,
                 twin=twin if micro_batches is None else None, rows=b, length=t, cfg=plan.cfg, param_args=trained)


def _frozen_arg(frozen) -> tuple:
  """The train step's third argument under LoRA (the frozen base), none without."""
  return (frozen,) if frozen else ()


@_on_plan
def sft_step(plan: Plan, micro_batches: int | None = None) -> Program:
  g = plan.config.rft
  return _fit_step(plan, "rft/sft_step", g, rft.sft_loss_fn(plan.cfg, g), plan.params(),
                   lambda m, b, t: {"loss_mask": plan.batch((m, b, t), jnp.float32)}, micro_batches,
                   twin=_layer_twin(plan, sft_step))


def _grpo_shapes(plan: Plan) -> tuple[int, int, int]:
  g = plan.config.grpo
  rows = int(g.prompts_per_step) * int(g.group_size)
  m = int(g.micro_batches)
  return m, rows // m, grpo_stage.row_length(plan.prompt_len, int(g.sampling.max_new_tokens))


def _grpo_resident(plan: Plan, parts: tuple[str, ...]) -> dict[str, Any]:
  """The GRPO stage's device arrays beside a program's arguments: "params" (f32 masters), "moments" (the optimizer
  state) and, when beta > 0, "reference" (the frozen KL reference in compute dtype, `train.grpo.reference_params`;
  in host memory with `grpo.reference_on_host`, on the device only as the reference forward's argument).
  Under LoRA the state is the adapters' ("params" is then "adapters": the frozen base is an argument of every
  program, or the sampler's weights) and the reference is the base itself with the adapters off
  (`lora.adapters_off`): its only arrays of its own are a zeroed copy of the adapters ("reference adapters")."""
  params = plan.params()
  trained = lora.split(params, plan.cfg.lora)[0]
  state = abstract_state(trained, make_optimizer(plan.config.grpo.optim, 1000)[0])
  adapters = bool(plan.cfg.lora.rank)
  out = {("adapters" if adapters else "params"): trained, "moments": state.opt_state}
  gc = GrpoConfig.from_config(plan.config.grpo)
  if gc.has_kl and adapters:
    out["reference adapters"] = plan.adapters()
  elif gc.has_kl and not gc.reference_on_host:
    out["reference"] = _compute_copy(plan, params)
  aliases = {"params": ("params", "adapters"), "moments": ("moments",),
             "reference": ("reference", "reference adapters")}
  return {k: out[k] for part in parts for k in aliases[part] if k in out}


def _compute_copy(plan: Plan, params):
  return _like(jax.eval_shape(functools.partial(weights.for_compute, plan.cfg), params), params)


def _grpo_updater(plan: Plan):
  g = plan.config.grpo
  optimizer, schedule = make_optimizer(g.optim, int(g.steps))
  return GrpoUpdater(plan.cfg, GrpoConfig.from_config(g), optimizer, schedule), optimizer


@_on_plan
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
  trained, frozen = lora.split(params, plan.cfg.lora)  # under LoRA: the adapters train, the base is an argument
  return Program("grpo/step", updater.train_step, (abstract_state(trained, optimizer), batch, *_frozen_arg(frozen)),
                 f"{m} x {b} rollouts x {t} tokens", flops, model_flops,
                 cost.train_bytes(plan.cfg, trained, optimizer, m), m * b * t,
                 twin=_layer_twin(plan, grpo_step) if micro_batches is None else None, rows=b, length=t,
                 cfg=plan.cfg, param_args=trained, resident=_grpo_resident(plan, ("reference",)))


@_on_plan
def grpo_reference(plan: Plan) -> Program:
  """Reference log-probs (the KL term), one forward per step from the frozen reference in compute dtype (under LoRA:
  the base weights as stored with the adapters off, `lora.adapters_off`, float32 like the adapters they zero)."""
  m, b, t = _grpo_shapes(plan)
  updater, _ = _grpo_updater(plan)
  params = plan.params()
  ref = params if plan.cfg.lora.rank else _compute_copy(plan, params)
  # The loss mask says which head chunks run (`train.logprobs`); the count below assumes all of them do.
  batch = {"tokens": plan.batch((m, b, t), jnp.int32), "mask": plan.batch((m, b, t), jnp.bool_),
           "loss_mask": plan.batch((m, b, t), jnp.float32)}
  flops = cost.forward_flops(plan.cfg, m * b, t)
  return Program("grpo/reference_logprobs", updater.logp, (ref, batch), f"{m} x {b} rollouts x {t} tokens", flops,
                 flops, cost.forward_bytes(plan.cfg, ref, m), m * b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg, resident=_grpo_resident(plan, ("params", "moments")))


def _like(abstract, shardings_of):
  """ShapeDtypeStructs of `abstract` with the shardings of the same leaves in `shardings_of`."""
  return jax.tree.map(lambda a, b: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=b.sharding), abstract,
                      shardings_of)


@_on_plan
def metarm_step(plan: Plan, micro_batches: int | None = None) -> Program:
  params = _meta_params(plan)
  return _fit_step(plan, "metarm/step", plan.config.metarm, metarm.bce_loss_fn(plan.cfg),
                   params, lambda m, b, t: {"label": plan.batch((m, b), jnp.float32),
                                            "weight": plan.batch((m, b), jnp.float32)}, micro_batches, head=False)


@_on_plan
def metarm_states(plan: Plan) -> Program:
  """`metarm.method="probe"`: one forward pass giving each row's head input at every depth (no training step)."""
  m = plan.config.metarm
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  b, t = -(-int(m.batch_size) // shards) * shards, int(m.max_len)
  params = plan.params()
  args = (params, plan.array((b, t), jnp.int32, ("activation_batch", "activation_length")),
          plan.array((b, t), jnp.bool_, ("activation_batch", "activation_length")))
  flops = cost.forward_flops(plan.cfg, b, t, head=False)
  return Program("metarm/states", scalar_rm.depth_program(plan.cfg), args, f"{b} rows x {t} tokens", flops, flops,
                 cost.forward_bytes(plan.cfg, params, 1), b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg)


# The BT RM's batch row is an item with all its responses padded to the run's longest list: the paper's RM data
# (`spct.PAPER_RM_DATA`) has lists of at most 4 (UltraFeedback); the rest are pairs.
BTRM_RESPONSES = 4


@_on_plan
def btrm_step(plan: Plan, micro_batches: int | None = None) -> Program:
  """The Bradley-Terry step (`stages.btrm.bt_loss_fn` under `make_train_step`): `batch_size / micro_batches` items
  of `BTRM_RESPONSES` responses of `max_len` tokens per pass, one [rows * n, T] forward of the scalar RM."""
  g, n = plan.config.btrm, BTRM_RESPONSES
  m, b = _micro(g)
  m = micro_batches or m
  t = int(g.max_len)
  optimizer, schedule = make_optimizer(g.optim, 1000)
  fn = make_train_step(btrm_stage.bt_loss_fn(plan.cfg), optimizer, schedule, compute_dtype=plan.cfg.dtype)
  batch = {"tokens": plan.batch((m, b, n, t), jnp.int32), "mask": plan.batch((m, b, n, t), jnp.bool_),
           "rewards": plan.batch((m, b, n), jnp.float32), "valid": plan.batch((m, b, n), jnp.bool_)}
  flops, model_flops = cost.train_flops(plan.cfg, m * b * n, t, head=False)
  trained, frozen = lora.split(_meta_params(plan), plan.cfg.lora)
  return Program("btrm/step", fn, (abstract_state(trained, optimizer), batch, *_frozen_arg(frozen)),
                 f"{m} x {b} items x {n} responses x {t} tokens", flops, model_flops,
                 cost.train_bytes(plan.cfg, trained, optimizer, m), m * b * n * t, rows=b * n, length=t,
                 cfg=plan.cfg, param_args=trained)


@_on_plan
def btrm_scores(plan: Plan) -> Program:
  """The BT RM's scalars (held-out pairs, evaluation): `judges.scalar_rm.score_program` on a micro-batch's rows
  (`batch_size / micro_batches` items x `BTRM_RESPONSES`, as `stages.btrm` scores), in the model's stored dtype."""
  g = plan.config.btrm
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  b = -(-(max(1, int(g.batch_size) // int(g.micro_batches)) * BTRM_RESPONSES) // shards) * shards
  t = int(g.max_len)
  params = _meta_params(plan)
  args = (params, plan.array((b, t), jnp.int32, ("activation_batch", "activation_length")),
          plan.array((b, t), jnp.bool_, ("activation_batch", "activation_length")))
  flops = cost.forward_flops(plan.cfg, b, t, head=False)
  return Program("btrm/scores", scalar_rm.score_program(plan.cfg), args, f"{b} rows x {t} tokens", flops, flops,
                 cost.forward_bytes(plan.cfg, params, 1), b * t, kind="forward", rows=b, length=t, cfg=plan.cfg)


def _meta_params(plan: Plan):
  return {"decoder": plan.params(), "head": {"kernel": plan.replicated((plan.cfg.hidden_size,), jnp.float32),
                                             "bias": plan.replicated((), jnp.float32)}}


def _eval_resident(plan: Plan, meta: bool = True) -> dict[str, Any]:
  """The evaluation stage's device arrays beside a program's: the meta RM (loaded before judging) while the GRM
  samples, the GRM's params while the meta RM scores, and the base weights when a trained policy is compared with
  a baseline (`eval.baseline`), and a trained baseline's params while it judges. Evaluation loads every model in
  compute dtype (`plan` is built that way). Under LoRA the base model and a trained baseline share the policy's base
  weights (`train.checkpoint.restore_trained` joins adapters onto them): each is one more set of adapters; the meta RM
  is loaded on its own (`judges.meta_rm.load_meta_rm`), and while it scores the GRM is whole beside it."""
  e, out = plan.config.eval, {}
  if meta and str(e.meta_model):
    out["meta RM"] = _meta_params(plan)
  if not meta:
    out["GRM params"] = plan.params()
  baselines = [b.strip() for b in str(e.get("baseline", "") or "").split(",") if b.strip() not in ("", str(e.policy))]
  other = plan.adapters if plan.cfg.lora.rank else plan.params  # another model on the same base
  if baselines and str(e.policy) != "base":
    out["base params"] = other()
  if any(b != "base" for b in baselines):  # a trained baseline ("rft") is restored beside the base weights
    out["baseline params"] = other()
  return out


@_on_plan
def meta_scores(plan: Plan) -> Program:
  """MetaRM@k at evaluation: one forward of the meta RM per batch of (prompt, judgement) sequences."""
  e = plan.config.eval
  t = int(plan.config.metarm.max_len) if "metarm" in plan.config else 1024
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  b = -(-int(e.meta_batch_size) // shards) * shards
  params = _meta_params(plan)
  fn = scalar_rm.score_program(plan.cfg)
  args = (params, plan.array((b, t), jnp.int32, ("activation_batch", "activation_length")),
          plan.array((b, t), jnp.bool_, ("activation_batch", "activation_length")))
  flops = cost.forward_flops(plan.cfg, b, t, head=False)
  return Program("eval/meta_scores", fn, args, f"{b} rows x {t} tokens", flops, flops,
                 cost.forward_bytes(plan.cfg, params, 1), b * t, kind="forward", rows=b, length=t,
                 cfg=plan.cfg, resident=_eval_resident(plan, meta=False))


# --------------------------------------------------------------------------------------------------- sampling


@dataclasses.dataclass(frozen=True)
class EngineShape:
  """One `sampling.generate` call as the stage makes it, on the continuous engine: its layout and how a round's
  prompts pass through it.

  prompts: distinct prompts of the call (requests); n: samples per prompt; layout: `engine.choose_layout` as
  `generate` picks it; batch: prompts per insert call (the first placement fills every prefix slot, `Engine._prefill`
  rounds the chunk to a bucket); view: prefix slots a step reads (the longest prompt's bucket)."""

  layout: engine.Layout
  prompts: int
  n: int
  batch: int
  view: int

  @property
  def groups(self) -> int:
    """Prefix slots the call fills in all: a request takes ceil(n / per_prefix) row groups, each prefilled."""
    return self.prompts * -(-self.n // self.layout.per_prefix)

  @property
  def inserts(self) -> int:
    """Insert calls of the call at full buckets (refills as rows end insert fewer prompts per call: at least this)."""
    return -(-self.groups // min(self.batch, self.layout.prefixes))

  @property
  def steps(self) -> int:
    """Step calls of `new_tokens` iterations, every row slot busy, that decode all the call's samples when each
    runs to `new_tokens` (the bound; the engine makes more, shorter calls as it refills rows whose samples ended
    early, and decodes fewer iterations in all)."""
    return -(-self.groups // self.layout.prefixes)


def engine_shape(plan: Plan, items: int, k: int, max_new: int) -> EngineShape:
  """The engine of a sampler call of `items` items x k samples (module docstring): min(k, n!) distinct prompts per
  item of `prompt_len` tokens, ceil(k / distinct) samples each, laid out by `choose_layout` with `generate`'s
  `MAX_ROWS` over data x fsdp."""
  distinct = min(k, math.factorial(plan.responses))
  n = -(-k // distinct)
  prompts = items * distinct
  shards = plan.mesh.shape["data"] * plan.mesh.shape["fsdp"]
  layout = engine.choose_layout([n] * prompts, plan.prompt_len, max_new, NUM_STOP_IDS, MAX_ROWS, shards)
  groups = prompts * -(-n // layout.per_prefix)
  batch = min(batch_bucket(min(groups, layout.prefixes), shards), math.lcm(layout.prefixes, shards))
  return EngineShape(layout, prompts, n, batch, layout.prefix_len)


def _placed_params(plan: Plan):
  """The params as `sampling.params.place` leaves them for the engine: compute dtype, whole on every data / fsdp
  shard (`sampling_shardings`)."""
  cfg = plan.cfg
  abstract = jax.eval_shape(functools.partial(weights.for_compute, cfg), plan.params())
  with plan.scope():
    shardings = sampling_shardings(cfg)
  return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), abstract, shardings)


def _sampler_resident(plan: Plan, params, resident: Callable[[Plan], dict] | None) -> dict[str, Any]:
  """What stays on the chip beside an engine program: the stage's own arrays, and the leaves of the params as
  stored that `place` copied (another dtype or sharding; the others are the same arrays)."""
  out = resident(plan) if resident else {}
  originals = [a for a, c in zip(jax.tree.leaves(plan.params()), jax.tree.leaves(params), strict=True)
               if a.dtype != c.dtype or a.sharding != c.sharding]
  if originals and "params" not in out:
    out["params (as stored)"] = originals
  return out


def _engine_state(plan: Plan, layout: engine.Layout):
  """The engine's `State` as abstract arguments, with the shardings `init_program` gives it (`_constrain_state`):
  read off its compiled output (an init of zeros compiles in a moment)."""
  with plan.scope():
    init = engine.init_program(plan.cfg, layout)
  shapes = jax.eval_shape(init)
  shardings = init.lower().compile().output_shardings
  return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh), shapes, shardings)


def _rows_of(plan: Plan, shape, dtype):
  return plan.array(shape, dtype, ("activation_batch", "activation_length"))  # as `Engine._put` shards them


def _engine_words(s: EngineShape) -> str:
  lay = s.layout
  return (f"{lay.rows} rows = {lay.prefixes} prefixes x {lay.per_prefix}, {s.view} prefix + {lay.new_tokens} own "
          f"slots")


@_on_plan
def sampler_insert(plan: Plan, name: str, items: int, k: int, max_new: int,
                   resident: Callable[[Plan], dict] | None = None, rounds: int = 1) -> Program:
  """The engine's prefill-insert (`engine.insert_program`) as a `generate` call of `items` items runs it first: a
  bucket of `batch` prompts of `prompt_len` tokens prefilled into the prefix slots of the state (donated)."""
  s = engine_shape(plan, items, k, max_new)
  lay, cfg = s.layout, plan.cfg
  params = _placed_params(plan)
  fn = engine.insert_program(cfg, lay, s.batch, lay.prefix_len)
  args = (_engine_state(plan, lay), params, _rows_of(plan, (s.batch, lay.prefix_len), jnp.int32),
          _rows_of(plan, (s.batch, lay.prefix_len), jnp.bool_), _rows_of(plan, (s.batch,), jnp.int32))
  flops = cost.insert_flops(cfg, s.batch, lay.prefix_len)
  return Program(f"{name}_insert", fn, args, f"{s.batch} prompts x {lay.prefix_len} tokens into {_engine_words(s)}",
                 flops, flops, cost.insert_bytes(cfg, params, s.batch, lay.prefix_len),
                 s.batch * lay.prefix_len, calls=s.inserts * rounds, kind="insert", rows=s.batch,
                 length=lay.prefix_len, cfg=cfg, resident=_sampler_resident(plan, params, resident))


@_on_plan
def sampler_step(plan: Plan, name: str, items: int, k: int, max_new: int,
                 resident: Callable[[Plan], dict] | None = None, rounds: int = 1) -> Program:
  """The engine's step call (`engine.step_program`: start the new rows, then the decode `while_loop`) at the
  layout `generate` picks, its state donated; counted as `new_tokens` iterations of every row slot."""
  s = engine_shape(plan, items, k, max_new)
  lay, cfg = s.layout, plan.cfg
  params = _placed_params(plan)
  fn = engine.step_program(cfg, lay, s.view)
  r, rows = lay.rows, ("activation_batch", "activation_length")
  starts = engine.Starts(
    new=plan.array((r,), jnp.bool_, rows), keys=plan.array((r, 2), jnp.uint32, rows),
    temperature=plan.array((r,), jnp.float32, rows), top_p=plan.array((r,), jnp.float32, rows),
    top_k=plan.array((r,), jnp.int32, rows), max_new=plan.array((r,), jnp.int32, rows),
    stop_ids=plan.array((r, lay.num_stop), jnp.int32, rows))
  args = (_engine_state(plan, lay), params, starts, plan.replicated((), jnp.int32), plan.replicated((), jnp.bool_))
  flops = lay.new_tokens * cost.decode_flops(cfg, r, s.view, lay.new_tokens)
  must = cost.decode_must_bytes(cfg, r, lay.prefixes, s.view, lay.new_tokens, params)
  # Each iteration reads what a decode step must; once per call the layers are sliced apart (read and written).
  moved = lay.new_tokens * must + 2 * cost.per_chip_bytes(params["layers"])
  return Program(f"{name}_step", fn, args, f"{_engine_words(s)}, {lay.new_tokens} iterations", flops, flops,
                 moved, r * lay.new_tokens, calls=s.steps * rounds, kind="step", rows=r,
                 length=lay.new_tokens, cfg=cfg, param_args=params, resident=_sampler_resident(plan, params, resident))


@parallel.per_mesh(maxsize=16)
def engine_decode_program(cfg):
  """jit(step)(params, layer_params, tok [R], pos [R], cache) -> (logits [R, 1, V], cache): the model call of the
  engine's loop body (`engine.step_program`: `decode_step` over the rows' rings and the prefix view, with key
  positions) as its own program. The body's other work is per row (sampling, a token and log-prob written), so this
  is what an iteration moves and computes. The cache is donated: the loop updates it in place."""

  def one(params, layer_params, tok, pos, cache):
    ones = jnp.ones((tok.shape[0], 1), bool)
    return model_decode_step(cfg, params, layer_params, tok[:, None], pos[:, None], ones, cache)

  return jax.jit(one, donate_argnums=(4,))


@_on_plan
def decode_step(plan: Plan, name: str, items: int, k: int, max_new: int,
                resident: Callable[[Plan], dict] | None = None) -> Program:
  """One iteration of that engine's decode loop, alone: every row slot one token over its ring and its prefix
  slot's view, with the engine's cache (`LayerCaches` with key positions). What each token costs in bytes."""
  s = engine_shape(plan, items, k, max_new)
  lay, cfg = s.layout, plan.cfg
  params = _placed_params(plan)
  top = {k_: v for k_, v in params.items() if k_ != "layers"}

  def one_layer(a):
    spec = tuple(a.sharding.spec) + (None,) * (len(a.shape) - len(a.sharding.spec))
    return jax.ShapeDtypeStruct(a.shape[1:], a.dtype, sharding=NamedSharding(plan.mesh, PartitionSpec(*spec[1:])))

  layers = [jax.tree.map(one_layer, params["layers"]) for _ in range(cfg.num_layers)]
  state = _engine_state(plan, lay)

  def view(a, axis):  # the step's prefix view: the first `view` slots of a prefix slot
    shape = list(a.shape)
    shape[axis] = s.view
    return jax.ShapeDtypeStruct(tuple(shape), a.dtype, sharding=a.sharding)

  c = state.cache
  cache = dataclasses.replace(
    c, prefix_k=tuple(view(a, -1) for a in c.prefix_k), prefix_v=tuple(view(a, -2) for a in c.prefix_v),
    prefix_valid=view(c.prefix_valid, -1), prefix_positions=view(c.prefix_positions, -1))
  rows = ("activation_batch",)
  args = (top, layers, plan.array((lay.rows,), jnp.int32, rows), plan.array((lay.rows,), jnp.int32, rows), cache)
  fn = engine_decode_program(cfg)
  flops = cost.decode_flops(cfg, lay.rows, s.view, lay.new_tokens)
  must = cost.decode_must_bytes(cfg, lay.rows, lay.prefixes, s.view, lay.new_tokens, params)
  return Program(name, fn, args, _engine_words(s), flops, flops, must, lay.rows, must_bytes=must, kind="decode",
                 rows=lay.rows, length=lay.new_tokens, cfg=cfg,
                 resident=_sampler_resident(plan, params, resident))


# --------------------------------------------------------------------------------------------------- the preset


def stage_programs(plan: Plan, decode_steps: bool = True) -> list[Callable[[], Program]]:
  """Builders (called lazily: building a 27B program's arguments is cheap, compiling it is not) for every program
  the config's stages run, in stage order. Each sampling use runs the continuous engine: its insert and step
  programs, and (`decode_steps`) one iteration of its decode loop alone for the bytes a token moves."""
  c, out = plan.config, []
  stages = tuple(c.stages)

  def add(fn, *args, on: Plan = plan, **kw):
    out.append(lambda: fn(on, *args, **kw))

  def sampling(name, decode_name, *shape, on: Plan = plan, resident=None, rounds: int = 1):
    add(sampler_insert, name, *shape, on=on, resident=resident, rounds=rounds)
    add(sampler_step, name, *shape, on=on, resident=resident, rounds=rounds)
    if decode_steps:
      add(decode_step, decode_name, *shape, on=on, resident=resident)

  # Items a sampling stage judges in all: its calls hold `batch_items` of them, or all at once when that is 0.
  train_items = int(c.data.train_limit) if "data" in c and int(c.data.train_limit) else 1
  if "rft" in stages:
    if not str(c.rft.sampler):  # the trained model samples its own trajectories
      s = judges.Sampling.from_config(c, "rft.sampling", "rft")
      sampling("rft/sample", "rft/decode_step", s.items_per_call(train_items), s.k, s.max_new_tokens)
    add(sft_step)
  if "grpo" in stages:
    g = c.grpo
    s = grpo_stage.rollout_sampling(c, 0)
    per_call = s.items_per_call(int(g.prompts_per_step))
    beside = functools.partial(_grpo_resident, parts=("moments", "reference"))
    sampling("grpo/rollouts", "grpo/decode_step", per_call, s.k, s.max_new_tokens,
             resident=beside, rounds=-(-int(g.prompts_per_step) // per_call))
    if GrpoConfig.from_config(g).has_kl:
      add(grpo_reference)
    add(grpo_step)
  if "metarm" in stages:
    m = c.metarm
    if int(m.sampling.k) > 0:
      # A trained policy's params are restored beside the base weights the meta RM starts from.
      # Under LoRA the policy is its adapters on the same base: the base model keeps only its own fresh adapters.
      beside = ((lambda p: {"base params": p.adapters() if p.cfg.lora.rank else p.params()})
                if str(m.policy) != "base" else None)
      s = judges.Sampling.from_config(c, "metarm.sampling", "metarm_policy")
      sampling("metarm/sample", "metarm/decode_step", s.items_per_call(train_items), s.k, s.max_new_tokens,
               resident=beside)
    add(metarm_states if str(m.method) == "probe" else metarm_step)
  if "eval" in stages:
    e = c.eval
    ev = dataclasses.replace(plan, cfg=plan.cfg.replace(param_dtype=plan.cfg.dtype))  # loaded in compute dtype
    s = judges.Sampling.from_config(c, "eval.sampling", "eval", single_template="default")
    sampling("eval/judge", "eval/decode_step", s.items_per_call(int(e.limit) or 1), s.k, s.max_new_tokens, on=ev,
             resident=_eval_resident)
    if str(e.meta_model):
      add(meta_scores, on=ev)
  if "btrm" in stages:  # the baselines' Bradley-Terry RM (experiments/baselines.py)
    add(btrm_step)
    add(btrm_scores)
  return out
