"""Plan a preset on a TPU slice: build the mesh on the slice's devices, compile every program, print and return
the numbers (`python -m grm_jax.aot` is the command-line face of `run`)."""

from __future__ import annotations

import time

from grm_jax import configs, parallel
from grm_jax.aot import compile as aot_compile
from grm_jax.aot import cost, hardware, programs
from grm_jax.models import lora
from grm_jax.models.model import load_config

GIB = 1 << 30


def plan_for(config, slice_: hardware.Slice, devices, prompt_len: int) -> programs.Plan:
  """The mesh of `config.mesh` on the slice's devices and the architecture, checked before anything compiles. With
  `model.lora.rank` > 0 the architecture carries the adapters and its base weights are stored in the compute dtype,
  as `stages.common.load_base` loads them."""
  shape = {"data": config.mesh.data, "fsdp": config.mesh.fsdp, "tensor": config.mesh.tensor}
  try:
    mesh = parallel.make_mesh(shape, devices)
  except ValueError as e:
    raise ValueError(f"config mesh {shape} on {slice_.name} ({slice_.chips} chips): {e}") from e
  configs.validate(config, num_devices=slice_.chips)
  m = config.model
  spec = lora.from_config(m)
  cfg = load_config(m.name, dtype=m.dtype, param_dtype=m.dtype if spec.rank else m.param_dtype, arch=m.arch,
                    remat=bool(m.remat))
  if spec.rank:
    cfg = cfg.replace(lora=spec)
  return programs.Plan(config, cfg, mesh, tuple(tuple(r) for r in config.mesh.rules), prompt_len)


def _gb(x: float) -> str:
  return f"{x / GIB:.2f}"


def _e(x: float | None) -> str:
  return "-" if x is None else f"{x:.3g}"


def hand_count(p: programs.Program, compiled_bytes: int) -> dict:
  """The program's memory counted by hand per chip of the current mesh (to set beside XLA's `compiled_bytes`) and for
  one GPU holding everything, with what the stage keeps beside it, against the GPUs' HBM at 10% headroom."""
  with parallel.use_mesh(None):
    one_gpu = cost.memory_estimate(p) + sum(cost.global_bytes(v) for v in p.resident.values())
  return {"program": p.name, "per_chip_estimate": cost.memory_estimate(p), "per_chip_compiled": compiled_bytes,
          "one_gpu_estimate": one_gpu,
          **{f"fits_{k}": one_gpu <= (1 - aot_compile.HEADROOM) * g.hbm_bytes for k, g in hardware.GPUS.items()}}


def run(config, topology: str, only=(), xla_flops: bool = True, prompt_len: int = 2048, out=print,
        hbm_bytes: int = 0, hbm_name: str = "") -> dict:
  """`hbm_bytes` > 0: the memory each program (with what stays beside it) must fit in, in place of the chip's (a GPU
  planned through one TPU chip with more HBM: XLA:TPU compiles with the chip's, the fit is judged against this)."""
  slice_ = hardware.parse_slice(topology)
  devices = hardware.tpu_devices(slice_)
  plan = plan_for(config, slice_, devices, prompt_len)
  chip = slice_.chip
  capacity = chip_capacity = aot_compile.hbm_capacity(devices[0]) or chip.hbm_bytes
  if hbm_bytes:
    if hbm_bytes > capacity:
      raise ValueError(f"--hbm_gib={hbm_bytes / GIB:g}: more than the {_gb(capacity)} GiB XLA:TPU allows on "
                       f"{slice_.name}; plan on a chip with more HBM")
    out(f"fit judged against {hbm_name or 'a device'} of {_gb(hbm_bytes)} GiB (XLA:TPU compiles with the chip's "
        f"{_gb(capacity)} GiB)")
    capacity = hbm_bytes
  period = cost.layer_period(plan.cfg)
  out(f"{slice_.name}: {slice_.chips} x {chip.name}, {_gb(chip_capacity)} GiB HBM usable per chip (XLA), "
      f"{chip.bf16_flops / 1e12:.0f} TFLOP/s bf16, {chip.hbm_bandwidth / 1e9:.0f} GB/s; mesh {dict(plan.mesh.shape)}; "
      f"model {plan.cfg.num_params() / 1e9:.2f}B params, {plan.cfg.dtype} compute, {plan.cfg.param_dtype} params, "
      f"remat={plan.cfg.remat}" + (f", LoRA rank {plan.cfg.lora.rank} on {','.join(plan.cfg.lora.targets)}"
                                   if plan.cfg.lora.rank else "") + f"; prompts {prompt_len} tokens")
  results, estimates = [], []
  for build in programs.stage_programs(plan):
    with plan.scope():  # each program built and lowered on the slice's mesh
      p = build()
      if only and not p.name.startswith(tuple(only)):
        continue
      micro = int(p.args[1]["tokens"].shape[0]) if p.twin is not None else 1
      r = aot_compile.compile_program(p, chip, capacity, slice_.chips, xla_flops, period, plan.cfg.num_layers, micro)
      estimates.append(hand_count(p, r.needed))
    results.append(r)
    est_chip = estimates[-1]["per_chip_estimate"]
    state = "fits" if r.fits_with_headroom else ("fits, <10% headroom" if r.fits else "DOES NOT FIT")
    out(f"  {p.name:26s} {p.shape}")
    beside = ", ".join(f"{k} {_gb(v)}" for k, v in r.resident_parts.items())
    out(f"    {state}: needs {_gb(r.total)} of {_gb(r.capacity)} GiB ({r.headroom:+.0%} free) = args "
        f"{_gb(r.argument)} + temps {_gb(r.temp)} + out {_gb(r.output)} - aliased {_gb(r.alias)}"
        + (f" + kept beside it {_gb(r.resident)} ({beside})" if beside else "")
        + f"; compiled in {r.compile_seconds:.0f} s; hand count {_gb(est_chip)} GiB")
    if r.fits:
      ratios = []
      if r.flops_ratio:
        ratios.append(f"XLA/analytic FLOPs {r.flops_ratio:.2f}")
      if r.bytes_ratio:
        ratios.append(f"HBM bytes moved / (weights + KV) {r.bytes_ratio:.2f} (XLA's bytes accessed: "
                      f"{r.xla_bytes_ratio:.2f})")
      out(f"    {_e(r.flops)} FLOP/chip (analytic), {_e(r.xla_flops)} (XLA); roofline {r.seconds * 1e3:.1f} ms "
          f"({r.bound}-bound), {r.tokens_per_second:,.0f} tok/s, MFU {r.mfu:.0%}" + (f"; {', '.join(ratios)}"
                                                                                      if ratios else ""))
    big = [f"{path} {b / 1e6:.0f} MB" for path, b in r.replicated if b > aot_compile.FINDING_BYTES]
    if big:
      out(f"    replicated on every chip: {'; '.join(big)}")
  summary = {"topology": slice_.name, "chips": slice_.chips, "chip": chip.name, "capacity": capacity,
             "chip_source": chip.source, "mesh": dict(plan.mesh.shape), "model_params": plan.cfg.num_params(),
             "prompt_len": prompt_len, "programs": [r.as_dict() for r in results], "memory_estimates": estimates,
             "date": time.strftime("%Y-%m-%d")}
  if plan.cfg.lora.rank:  # keys only where they apply: a plan without either reads as before
    summary["lora"] = plan.cfg.lora.as_json()
  if hbm_bytes:
    summary["limit"] = {"device": hbm_name or "a device", "bytes": hbm_bytes,
                        "chip_capacity": chip_capacity}
  return summary




def markdown(summary: dict) -> str:
  """The run as Markdown tables (docs/scaling.md pastes them): one row per program, then the hand-counted memory
  per chip against the compiled one and per GPU."""
  gib = 1 << 30
  usable = f"{summary['capacity'] / gib:.2f} GiB usable per chip"
  if "limit" in summary:
    usable = (f"{summary['limit']['chip_capacity'] / gib:.2f} GiB usable per chip; fit judged against "
              f"{summary['limit']['device']}, {summary['capacity'] / gib:.2f} GiB")
  lora_words = ""
  if "lora" in summary:
    lora_words = f", LoRA rank {summary['lora']['rank']} on {','.join(summary['lora']['targets'])}"
  head = (f"**{summary['topology']}** ({summary['chips']} x {summary['chip']}, {usable}), mesh {summary['mesh']}"
          f"{lora_words}, prompts {summary['prompt_len']} tokens, compiled {summary['date']}\n\n")
  rows = ["| program | shape | fits (headroom) | needs GiB/chip = args + temps + out - aliased + kept beside | "
          "compile s | "
          "FLOP/chip analytic | XLA / analytic | HBM bytes moved / (weights+KV) (XLA's count) | roofline ms | tok/s | "
          "MFU |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  for p in summary["programs"]:
    fits = ("yes" if p["fits_with_headroom"] else "tight" if p["fits"] else "**no**") + f" ({p['headroom']:+.0%})"
    parts = f"{p['total'] / gib:.1f}"
    if not p["error"]:
      parts += (f" = {p['argument'] / gib:.1f} + {p['temp'] / gib:.1f} + {p['output'] / gib:.1f} - "
                f"{p['alias'] / gib:.1f}")
    else:  # XLA refused it: the temporaries it asked for, and the arguments' shards
      parts += f" = {p['argument'] / gib:.1f} + {p['temp'] / gib:.1f} (refused by XLA)"
    if p["resident"]:
      parts += f" + {p['resident'] / gib:.1f}"
    ratio = f"{p['flops_ratio']:.2f}" if p["flops_ratio"] else "-"
    moved = f"{p['bytes_ratio']:.2f} ({p['xla_bytes_ratio']:.2f})" if p.get("bytes_ratio") else "-"
    timing = (f"{p['seconds'] * 1e3:,.0f} | {p['tokens_per_second']:,.0f} | {p['mfu']:.0%}" if p["fits"]
              else "- | - | -")
    rows.append(f"| {p['name']} | {p['shape']} | {fits} | {parts} | {p['compile_seconds']:.0f} | "
                f"{p['flops']:.3g} | {ratio} | {moved} | {timing} |")
  est = ["", "| program | hand count GiB/chip | compiled GiB/chip | hand / compiled | one GPU, hand count GiB | "
         "fits A100-40GB | fits 80 GB |", "|---|---:|---:|---:|---:|---|---|"]
  for e in summary["memory_estimates"]:
    ratio = e["per_chip_estimate"] / e["per_chip_compiled"] if e["per_chip_compiled"] else float("nan")
    est.append(f"| {e['program']} | {e['per_chip_estimate'] / gib:.1f} | {e['per_chip_compiled'] / gib:.1f} | "
               f"{ratio:.2f} | {e['one_gpu_estimate'] / gib:.1f} | {'yes' if e['fits_a100-40gb'] else 'no'} | "
               f"{'yes' if e['fits_h100-80gb'] else 'no'} |")
  return head + "\n".join(rows + est) + "\n"
