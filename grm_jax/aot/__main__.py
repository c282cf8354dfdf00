"""`python -m grm_jax.aot --config=experiments/spct.py:gemma2_27b --topology=v5p-128 [--json=OUT]`

Compiles every jitted program of the preset's stages for a TPU slice on this machine (XLA:TPU from libtpu, no TPU
and no weights needed) and prints, per program: bytes per chip (arguments, temporaries, outputs, aliased) against
the chip's HBM, whether it fits with 10% headroom, FLOPs (analytic, and XLA's where countable), the roofline time,
tokens/s and MFU at the chip's published peak, and the largest replicated arguments. Then the same per-device
memory counted by hand for one GPU. Exit status 1 (with one line per program naming the bytes needed and available)
when a program does not fit; 2 for bad input.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags
from ml_collections import config_flags

from grm_jax import configs, parallel
from grm_jax.aot import compile as aot_compile
from grm_jax.aot import cost, hardware, programs
from grm_jax.models.model import load_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment file and preset, e.g. experiments/spct.py:gemma2_27b")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU slice: v4-8 ..., v5e-1/4/8/..., v5p-8 ..., v6e-1/4/8/...")
_JSON = flags.DEFINE_string("json", None, "write every number to this JSON file")
_PROMPT_LEN = flags.DEFINE_integer("prompt_len", 0, "longest judging prompt in tokens (0 = rft.max_len - "
                                   "rft.max_new_tokens, or 2048 without an rft group)")
_ONLY = flags.DEFINE_list("programs", [], "compile only programs whose name starts with one of these")
_XLA_FLOPS = flags.DEFINE_bool("xla_flops", True, "also count training FLOPs with XLA on loop-free copies")
flags.mark_flags_as_required(["config", "topology"])

GIB = 1 << 30


def _prompt_len(config) -> int:
  if _PROMPT_LEN.value:
    return _PROMPT_LEN.value
  if "rft" in config:
    return int(config.rft.max_len) - int(config.rft.max_new_tokens)
  return 2048


def plan_for(config, slice_: hardware.Slice, devices, prompt_len: int) -> programs.Plan:
  """The mesh of `config.mesh` on the slice's devices and the architecture, checked before anything compiles."""
  shape = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
  try:
    mesh = parallel.make_mesh(shape, devices)
  except ValueError as e:
    raise ValueError(f"config mesh {shape} on {slice_.name} ({slice_.chips} chips): {e}") from e
  configs.validate(config, num_devices=slice_.chips)
  m = config.model
  cfg = load_config(m.name, dtype=m.dtype, param_dtype=m.param_dtype, arch=m.arch, remat=bool(m.remat))
  return programs.Plan(config, cfg, mesh, tuple(tuple(r) for r in config.mesh.rules), prompt_len)


def _gb(x: float) -> str:
  return f"{x / GIB:.2f}"


def _e(x: float | None) -> str:
  return "-" if x is None else f"{x:.3g}"


def run(config, topology: str, only=(), xla_flops: bool = True, prompt_len: int = 2048, out=print) -> dict:
  slice_ = hardware.parse_slice(topology)
  devices = hardware.tpu_devices(slice_)
  plan = plan_for(config, slice_, devices, prompt_len)
  chip = slice_.chip
  capacity = aot_compile.hbm_capacity(devices[0]) or chip.hbm_bytes
  period = cost.layer_period(plan.cfg)
  out(f"{slice_.name}: {slice_.chips} x {chip.name}, {_gb(capacity)} GiB HBM usable per chip (XLA), "
      f"{chip.bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bandwidth / 1e9:.0f} GB/s; mesh {dict(plan.mesh.shape)}; "
      f"model {plan.cfg.num_params() / 1e9:.2f}B params, {plan.cfg.dtype} compute, {plan.cfg.param_dtype} params, "
      f"remat={plan.cfg.remat}; prompts {prompt_len} tokens")
  results, estimates = [], []
  for build in programs.stage_programs(plan):
    p = build()
    if only and not p.name.startswith(tuple(only)):
      continue
    micro = int(p.args[1]["tokens"].shape[0]) if p.twin is not None else 1
    r = aot_compile.compile_program(p, chip, capacity, slice_.chips, xla_flops, period, plan.cfg.num_layers, micro)
    results.append(r)
    est_chip, est_gpu = cost.memory_estimate(p, plan.mesh), cost.memory_estimate(p)
    estimates.append({"program": p.name, "per_chip_estimate": est_chip, "per_chip_compiled": r.needed,
                      "one_gpu_estimate": est_gpu,
                      **{f"fits_{k}": est_gpu <= (1 - aot_compile.HEADROOM) * g.hbm_bytes for k, g in
                         hardware.GPUS.items()}})
    state = "fits" if r.fits_with_headroom else ("fits, <10% headroom" if r.fits else "DOES NOT FIT")
    out(f"  {p.name:26s} {p.shape}")
    out(f"    {state}: needs {_gb(r.needed)} of {_gb(r.capacity)} GiB ({r.headroom:+.0%} free) = args "
        f"{_gb(r.argument)} + temps {_gb(r.temp)} + out {_gb(r.output)} - aliased {_gb(r.alias)}; "
        f"compiled in {r.compile_seconds:.0f} s; hand count {_gb(est_chip)} GiB")
    if r.fits:
      ratios = []
      if r.flops_ratio:
        ratios.append(f"XLA/analytic FLOPs {r.flops_ratio:.2f}")
      if r.bytes_ratio:
        ratios.append(f"bytes moved / (weights + KV) {r.bytes_ratio:.2f}")
      out(f"    {_e(r.flops)} FLOP/chip (analytic), {_e(r.xla_flops)} (XLA); roofline {r.seconds * 1e3:.1f} ms "
          f"({r.bound}-bound), {r.tokens_per_second:,.0f} tok/s, MFU {r.mfu:.0%}" + (f"; {', '.join(ratios)}"
                                                                                      if ratios else ""))
    big = [f"{path} {b / 1e6:.0f} MB" for path, b in r.replicated if b > aot_compile.FINDING_BYTES]
    if big:
      out(f"    replicated on every chip: {'; '.join(big)}")
  return {"topology": slice_.name, "chips": slice_.chips, "chip": chip.name, "capacity": capacity,
          "chip_source": chip.source, "mesh": dict(plan.mesh.shape), "model_params": plan.cfg.num_params(),
          "prompt_len": prompt_len, "programs": [r.as_dict() for r in results], "memory_estimates": estimates,
          "date": time.strftime("%Y-%m-%d")}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  try:
    config = _CONFIG.value
    summary = run(config, _TOPOLOGY.value, _ONLY.value, _XLA_FLOPS.value, _prompt_len(config))
  except (hardware.TopologyError, ValueError, FileNotFoundError) as e:
    print(f"grm_jax.aot: {e}", file=sys.stderr)
    sys.exit(2)
  if _JSON.value:
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    with open(_JSON.value, "w") as f:
      json.dump(summary, f, indent=2, default=str)
  failed = [p for p in summary["programs"] if not p["fits_with_headroom"]]
  for p in failed:
    print(f"grm_jax.aot: {p['name']} does not fit {summary['topology']} with 10% headroom: needs "
          f"{p['needed']:,} bytes per chip, {p['capacity']:,} available ({p['headroom']:+.0%})", file=sys.stderr)
  sys.exit(1 if failed else 0)


if __name__ == "__main__":
  app.run(main)
