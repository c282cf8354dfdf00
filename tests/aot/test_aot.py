"""Compiling for a TPU slice on this CPU (grm_jax.aot): shardings as the rules say, memory bookkeeping that adds up,
the analytic FLOP count against XLA's on loop-free programs, and errors that name what is wrong.

Needs libtpu (the `tpu` extra, which .ci/run installs); skipped without it.
"""

import importlib.util
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from grm_jax import parallel
from grm_jax.aot import compile as aot_compile
from grm_jax.aot import cost, hardware, programs
from grm_jax.aot.run import plan_for
from grm_jax.models.config import Lora, tiny
from grm_jax.train.step import abstract_state
from tests.optim import optim

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None,
                                reason="libtpu not installed (pip install -e '.[tpu]')")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _smoke_config(**overrides):
  spec = importlib.util.spec_from_file_location("spct_experiment", os.path.join(ROOT, "experiments", "spct.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config("smoke")
  c.model.name, c.model.dtype, c.model.remat = "tiny:gemma2", "bfloat16", True
  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, 2, 2
  for key, value in overrides.items():
    group, name = key.split(".")
    c[group][name] = value
  return c


@pytest.fixture(scope="module")
def plan():
  s = hardware.parse_slice("v5p-8")
  return plan_for(_smoke_config(), s, hardware.tpu_devices(s), prompt_len=200)


def test_slice_names():
  assert (hardware.parse_slice("v5p-128").chips, hardware.parse_slice("v5p-128").shape) == (64, (4, 4, 4))
  assert hardware.parse_slice("v4-8").chips == 4
  assert hardware.parse_slice("v5e-1").shape == (1, 1)
  assert hardware.parse_slice("v6e-8").topology_name == "v6e:2x4"
  with pytest.raises(hardware.TopologyError, match="unknown slice name"):
    hardware.parse_slice("v7x-3")
  with pytest.raises(hardware.TopologyError, match="v5p-8, v5p-16"):
    hardware.parse_slice("v5p-12")
  assert len(hardware.tpu_devices(hardware.parse_slice("v5e-4"))) == 4


def _spec(a):
  return tuple(a.sharding.spec) + (None,) * (len(a.shape) - len(a.sharding.spec))


def test_sft_step_shards_params_and_moments_by_the_rules_and_memory_adds_up(plan):
  p = programs.sft_step(plan)
  compiled = p.fn.lower(*p.args).compile()
  state_in = compiled.input_shardings[0][0]
  params = plan.params()
  _, names = __import__("grm_jax.models.weights", fromlist=["x"]).abstract_params(plan.cfg)
  with plan.scope():
    want = parallel.tree_shardings(names, params)
  got_params = state_in.params
  for w, g, a in zip(jax.tree.leaves(want), jax.tree.leaves(got_params), jax.tree.leaves(params), strict=True):
    assert w.is_equivalent_to(g, len(a.shape)), (w, g)
  # Adam's mu and nu are sharded exactly like their params (fsdp shards the moments too).
  adam = state_in.opt_state[1][0]
  for moments in (adam.mu, adam.nu):
    for w, g, a in zip(jax.tree.leaves(want), jax.tree.leaves(moments), jax.tree.leaves(params), strict=True):
      assert w.is_equivalent_to(g, len(a.shape))
  # The q kernel [layers, embed, heads, head_dim] is split over fsdp (embed) and tensor (heads).
  assert _spec(params["layers"]["attn"]["q"])[1:3] == ("fsdp", "tensor")
  mem = compiled.memory_analysis()
  r = aot_compile.compile_program(p, plan.mesh.devices.flat[0] and hardware.TPU_CHIPS["v5p"], 95 << 30, 4,
                                  xla_flops=False)
  assert r.needed == mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - \
    mem.alias_size_in_bytes
  # Arguments: at least the per-chip shards we handed over (TPU layouts pad small tensors to tiles).
  shards = cost.per_chip_bytes(p.args)
  assert shards <= r.argument <= 4 * shards
  # The state is donated: its output reuses the argument buffers.
  state_bytes = cost.per_chip_bytes(p.args[0])
  assert r.alias >= state_bytes
  assert r.fits and r.headroom > 0.99


def test_every_program_of_the_plan_lowers(plan):
  """Every program the smoke preset's stages run traces and lowers with its abstract, sharded arguments (what a
  changed batch key or shape breaks; the TPU compiles of the test below are in the slow tier)."""
  names = []
  for build in programs.stage_programs(plan):
    p = build()
    p.fn.lower(*p.args)
    names.append(p.name)
  assert {"rft/sft_step", "grpo/step", "grpo/reference_logprobs", "grpo/rollouts_insert", "grpo/rollouts_step"} <= set(
    names), names
  assert any(n.startswith("metarm/") for n in names) and any(n.startswith("eval/") for n in names), names


@pytest.mark.slow  # five TPU compiles (~90 s on 2 cores); the test above lowers every program in the default tier
def test_grpo_and_sampler_programs_compile(plan):
  """GRPO's rollouts run on the continuous engine: its insert and step programs at the layout `generate` picks,
  and one iteration of its decode loop alone."""
  from grm_jax.sampling import engine  # noqa: PLC0415
  from grm_jax.sampling.generate import MAX_ROWS  # noqa: PLC0415

  results = {}
  for build in (programs.grpo_step, programs.grpo_reference):
    p = build(plan)
    results[p.name] = aot_compile.compile_program(p, hardware.TPU_CHIPS["v5p"], 95 << 30, 4, xla_flops=False)
  builds = {b().name: b for b in programs.stage_programs(plan)}
  assert {"grpo/rollouts_insert", "grpo/rollouts_step", "grpo/decode_step"} <= set(builds)
  assert not {"grpo/rollouts", "eval/judge"} & set(builds)  # the static sampler is no stage's program any more
  beside = builds["grpo/rollouts_step"]().resident
  shape = (2, 4, 16)  # 2 items x 4 samples: 2 distinct prompts per pair of responses, 2 samples each
  s = programs.engine_shape(plan, *shape)
  # The layout `generate` would pick: rows per prefix = the samples per prompt, a prefix slot per prompt.
  assert s.layout == engine.choose_layout([2] * 4, 200, 16, programs.NUM_STOP_IDS, MAX_ROWS, 2)
  assert (s.layout.rows, s.layout.per_prefix, s.layout.prefix_len, s.batch) == (8, 2, 256, 4)
  insert = programs.sampler_insert(plan, "grpo/rollouts", *shape, resident=lambda _: {})
  stage_beside = {k: v for k, v in beside.items() if k != "params (as stored)"}  # the step adds that one itself
  step = programs.sampler_step(plan, "grpo/rollouts", *shape, resident=lambda _: dict(stage_beside))
  d = programs.decode_step(plan, "grpo/decode_step", *shape)
  for p in (insert, step, d):
    results[p.name] = aot_compile.compile_program(p, hardware.TPU_CHIPS["v5p"], 95 << 30, 4)
  assert all(r.fits and r.needed > 0 for r in results.values())
  # The engine's state is donated to insert and step: its outputs are written over it.
  state_bytes = cost.per_chip_bytes(step.args[0])
  assert results["grpo/rollouts_step"].alias >= state_bytes and results["grpo/rollouts_insert"].alias >= state_bytes
  # The decode iteration reads the engine's cache: the rows' rings with key positions, the prefix slots' view.
  cache = d.args[-1]
  assert cache.positions.shape == (8, 16) and cache.positions.dtype == jnp.int32
  assert cache.prefix_positions.shape == (4, 256) and cache.prefix_k[0].shape[0] == 4
  # What it must read: the weights as the sampler holds them, each prefix slot's view once, every row's ring.
  placed = cost.per_chip_bytes(d.args[:2], plan.cfg.dtype)
  kv = cost.per_chip_bytes((cache.k, cache.v, cache.prefix_k, cache.prefix_v))
  assert d.must_bytes == pytest.approx(placed + kv, rel=1e-6)
  # The decode step is loop-free, so XLA's own FLOP and byte counts are read off it.
  r = results["grpo/decode_step"]
  assert r.xla_flops and r.xla_bytes and r.hbm_moved
  assert 0.9 < r.flops_ratio < 1.3, r.flops_ratio
  # HBM traffic (traffic.py) can not be below what the step must read, and XLA's count, which adds the on-chip
  # staging copies, is above it.
  assert 1.0 <= r.bytes_ratio < r.xla_bytes_ratio
  # GRPO keeps its reference in the compute dtype: half of the f32 params (norm scales stay f32).
  ref = programs.grpo_reference(plan).args[0]
  assert ref["layers"]["mlp"]["up"].dtype == jnp.bfloat16 and ref["final_norm"]["scale"].dtype == jnp.float32
  # The rollouts run beside the Adam moments (two f32 copies of the params' shards), that reference, and the f32
  # params as stored (the engine reads its compute-dtype copy, `place`): a fit counts them on top of its own bytes.
  params = cost.per_chip_bytes(plan.params())
  assert set(beside) == {"moments", "reference", "params (as stored)"}
  r = results["grpo/rollouts_step"]
  assert set(r.resident_parts) == {"moments", "reference", "params (as stored)"}
  assert r.resident_parts["moments"] >= 2 * params and r.resident_parts["reference"] == cost.per_chip_bytes(ref)
  assert r.total == r.needed + r.resident and r.headroom == pytest.approx(1 - r.total / r.capacity)
  squeezed = aot_compile.compile_program(step, hardware.TPU_CHIPS["v5p"], r.needed + r.resident // 2, 4,
                                         xla_flops=False)
  assert not squeezed.fits  # the program alone would fit; with what stays beside it, it does not


def _loop_free_forward_flops(cfg, mesh, rules, rows, length):
  from grm_jax.train.logprobs import token_logprobs  # noqa: PLC0415

  plan = programs.Plan(None, cfg, mesh, rules, 0)
  params = plan.params()
  tokens = plan.array((rows, length), jnp.int32, ("activation_batch",))
  fn = jax.jit(lambda p, t: token_logprobs(cfg, p, t, jnp.ones(t.shape, bool))[0])
  with plan.scope():
    return float(fn.lower(params, tokens).compile().cost_analysis()["flops"])


@pytest.mark.slow  # four TPU compiles of an unrolled forward (~50 s); the cost model's own tests stay in the default
def test_analytic_flops_match_xla_on_a_loop_free_program():
  """The rule in cost.py against XLA's count where XLA counts everything (no loops): a forward with every scan
  unrolled on one chip, and the extrapolation in depth that the CLI uses for the training steps."""
  devices = hardware.tpu_devices(hardware.parse_slice("v5e-1"))
  mesh = parallel.make_mesh({"fsdp": 1}, devices)
  rules = parallel.DEFAULT_RULES
  base = tiny("llama", hidden_size=512, intermediate_size=1536, num_heads=8, num_kv_heads=4, head_dim=64,
              vocab_size=4096, num_layers=4, dtype="bfloat16", unroll_scans=True)
  rows, length = 4, 512
  xla = _loop_free_forward_flops(base, mesh, rules, rows, length)
  analytic = cost.forward_flops(base, rows, length)
  assert 0.95 < xla / analytic < 1.15, (xla, analytic)
  # Depth extrapolation: layers 1 and 2 predict layers 4.
  f1, f2 = (_loop_free_forward_flops(base.replace(num_layers=n), mesh, rules, rows, length) for n in (1, 2))
  assert cost.extrapolate(f1, f2, 1, 4, 1) == pytest.approx(xla, rel=1e-3)
  # With a loop, XLA counts the layer body once: the reason for all of the above.
  looped = _loop_free_forward_flops(base.replace(unroll_scans=False), mesh, rules, rows, length)
  assert looped < 0.6 * xla


def test_out_of_memory_is_reported_with_the_numbers():
  message = ("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO temporaries (62.15G) "
             "exceeds available HBM (15.75G).")
  assert aot_compile.parse_oom(message) == (int(62.15 * (1 << 30)), int(15.75 * (1 << 30)))
  capacity = aot_compile.hbm_capacity(hardware.tpu_devices(hardware.parse_slice("v5e-1"))[0])
  assert 15 << 30 < capacity <= 16 << 30


def test_abstract_state_matches_init_state():
  """grm_jax.aot compiles against `abstract_state`; it must describe what `init_state` builds."""
  from grm_jax import models  # noqa: PLC0415
  from grm_jax.train.optimizer import make_optimizer  # noqa: PLC0415
  from grm_jax.train.step import init_state  # noqa: PLC0415

  with parallel.use_mesh(parallel.make_mesh({"fsdp": 4, "tensor": 2})):
    model = models.from_config(tiny("llama"))
  optimizer, _ = make_optimizer(optim(1e-3), 10)
  real = init_state(model.params, optimizer)
  abstract = abstract_state(jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding),
                                         model.params), optimizer)
  for r, a in zip(jax.tree.leaves(real), jax.tree.leaves(abstract), strict=True):
    assert (r.shape, r.dtype) == (a.shape, a.dtype) and r.sharding.is_equivalent_to(a.sharding, r.ndim)


def _cli(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "grm_jax.aot", *args], capture_output=True, text=True, cwd=ROOT,
                        env=env, timeout=600)


def test_cli_bad_input_names_what_is_wrong():
  out = _cli("--config=experiments/spct.py:smoke", "--topology=v7x-3")
  assert out.returncode == 2 and "v7x-3" in out.stderr and "unknown slice name" in out.stderr
  out = _cli("--config=experiments/spct.py:smoke", "--topology=v5p-8", "--config.mesh.tensor=3")
  assert out.returncode == 2 and "mesh" in out.stderr and "4 chips" in out.stderr


def test_cli_reports_a_program_that_does_not_fit(tmp_path):
  """A batch no chip can hold: exit 1, naming the program, the bytes needed and the bytes available."""
  out = _cli("--config=experiments/spct.py:smoke", "--topology=v5e-1", "--programs=rft/sft_step",
             "--config.rft.batch_size=512", "--config.rft.max_len=4096", "--xla_flops=false",
             f"--json={tmp_path / 'plan.json'}")
  assert out.returncode == 1, out.stderr[-2000:]
  line = next(x for x in out.stderr.splitlines() if x.startswith("grm_jax.aot: rft/sft_step"))
  assert "needs" in line and "available" in line
  import json  # noqa: PLC0415

  result = json.loads((tmp_path / "plan.json").read_text())["programs"][0]
  assert not result["fits"] and result["needed"] > result["capacity"] > 15 << 30
  # XLA names the temporaries it wanted; the arguments' shards come on top.
  assert result["error"] and result["temp"] > 0 and result["argument"] > 0
  assert result["needed"] == result["temp"] + result["argument"]


def test_evaluation_counts_each_params_copy_it_holds():
  """Judging baselines keeps the base weights, and a trained baseline's restored params, beside the policy's."""
  import types  # noqa: PLC0415

  import ml_collections  # noqa: PLC0415

  from grm_jax.aot import programs  # noqa: PLC0415

  def resident(policy, baseline):
    ev = ml_collections.ConfigDict({"policy": policy, "baseline": baseline, "meta_model": ""})
    plan = types.SimpleNamespace(config=ml_collections.ConfigDict({"eval": ev}), params=lambda: "params",
                                 cfg=types.SimpleNamespace(lora=Lora()))
    return sorted(programs._eval_resident(plan, meta=False))

  assert resident("grpo", "") == ["GRM params"]
  assert resident("grpo", "grpo") == ["GRM params"]
  assert resident("grpo", "base") == ["GRM params", "base params"]
  assert resident("grpo", "base,rft") == ["GRM params", "base params", "baseline params"]
  assert resident("base", "rft") == ["GRM params", "baseline params"]


def test_the_probe_meta_rm_compiles_its_one_forward_pass():
  """metarm.method=probe trains no step: its program is the forward pass that reads every depth's state."""
  s = hardware.parse_slice("v5p-8")
  probe_plan = plan_for(_smoke_config(**{"metarm.method": "probe"}), s, hardware.tpu_devices(s), prompt_len=200)
  builds = {b().name: b for b in programs.stage_programs(probe_plan)}
  assert "metarm/states" in builds and "metarm/step" not in builds
  result = aot_compile.compile_program(builds["metarm/states"](), hardware.TPU_CHIPS["v5p"], 95 << 30, 4,
                                       xla_flops=False)
  assert result.fits and result.needed > 0


def test_a_lora_plan_trains_the_adapters_beside_a_frozen_base_in_compute_dtype():
  """model.lora.rank > 0: the plan's params are the base in compute dtype and float32 adapters; each training step's
  state holds the trained part (adapters, a scalar head) and its moments, the base is the step's third argument;
  GRPO's KL reference is the base with the adapters off, so only a copy of the adapters stays beside."""
  from grm_jax.models import lora  # noqa: PLC0415

  s = hardware.parse_slice("v5p-8")
  c = _smoke_config(**{"grpo.reference_on_host": False, "grpo.beta": 0.02})
  c.model.lora.rank = 4
  lplan = plan_for(c, s, hardware.tpu_devices(s), prompt_len=200)
  params = lplan.params()
  mlp = params["layers"]["mlp"]
  assert mlp["up"].dtype == jnp.bfloat16 and mlp["up_lora_a"].dtype == mlp["up_lora_b"].dtype == jnp.float32
  trained, frozen = lora.split(params, lplan.cfg.lora)
  adapters = cost.per_chip_bytes(trained)
  p = programs.sft_step(lplan)
  state, _, base = p.args
  assert jax.tree.structure(state.params) == jax.tree.structure(trained)
  assert cost.per_chip_bytes(state.params) == adapters
  assert 2 * adapters <= cost.per_chip_bytes(state.opt_state) < 3 * adapters  # Adam's mu and nu of the adapters only
  assert jax.tree.structure(base) == jax.tree.structure(frozen) and cost.per_chip_bytes(p.param_args) == adapters
  full_plan = plan_for(_smoke_config(), s, hardware.tpu_devices(s), prompt_len=200)
  full = programs.sft_step(full_plan)
  assert len(full.args) == 2 and p.hbm_bytes < full.hbm_bytes
  r = aot_compile.compile_program(p, hardware.TPU_CHIPS["v5p"], 95 << 30, 4, xla_flops=False)
  assert r.fits and r.alias >= cost.per_chip_bytes(state)  # the adapters' state is donated, the base is not
  meta = programs.metarm_step(lplan).args[0].params  # the meta RM trains its head with the adapters
  assert "head" in meta and not any(k for k in lora._flat(meta["decoder"]) if not lora.is_adapter(k))
  step = programs.grpo_step(lplan)
  assert len(step.args) == 3 and set(step.resident) == {"reference adapters"}
  assert cost.per_chip_bytes(step.resident["reference adapters"]) == adapters
  assert set(programs.grpo_reference(lplan).resident) == {"adapters", "moments"}
  builds = {b().name: b for b in programs.stage_programs(lplan)}
  beside = builds["grpo/rollouts_step"]().resident
  # The sampler reads bf16 copies of the adapters: the f32 adapters stay beside it (and here, where the sampler
  # holds the weights unsplit over fsdp, the base's fsdp shards as stored too).
  assert set(beside) == {"moments", "reference adapters", "params (as stored)"}
  stored = beside["params (as stored)"]
  assert sum(cost.per_chip_bytes(a) for a in stored if a.dtype == jnp.float32 and a.ndim > 2) == adapters


@pytest.mark.slow  # two TPU compiles of the tiny model (~30 s on 2 cores)
def test_btrm_programs_are_planned_with_a_btrm_stage(plan):
  """The baselines' BT RM (`btrm` in the stages): its step takes [M, items, BTRM_RESPONSES, max_len] batches and
  its scores a micro-batch's rows, both compiled; without the stage neither is planned."""
  assert not any(b().name.startswith("btrm/") for b in programs.stage_programs(plan))
  c = _smoke_config(**{"btrm.batch_size": 8, "btrm.micro_batches": 2, "btrm.max_len": 128})
  c.stages = (*c.stages, "btrm")
  s = hardware.parse_slice("v5p-8")
  bplan = plan_for(c, s, hardware.tpu_devices(s), prompt_len=200)
  builds = {b().name: b for b in programs.stage_programs(bplan)}
  assert {"btrm/step", "btrm/scores"} <= set(builds)
  step, scores = builds["btrm/step"](), builds["btrm/scores"]()
  assert step.args[1]["tokens"].shape == (2, 4, programs.BTRM_RESPONSES, 128)
  assert step.args[1]["rewards"].shape == (2, 4, programs.BTRM_RESPONSES)
  assert scores.args[1].shape == (4 * programs.BTRM_RESPONSES, 128)
  for p in (step, scores):
    r = aot_compile.compile_program(p, hardware.TPU_CHIPS["v5p"], 95 << 30, 4, xla_flops=False)
    assert r.fits and r.needed > 0
