"""Compile one program for a TPU slice and read what XLA says it needs: memory per chip, FLOPs, bytes.

`compile_program` lowers and compiles a `programs.Program` with XLA:TPU (libtpu) against abstract arguments, reads
`memory_analysis()` (per chip: arguments, outputs, temporaries, and the aliased bytes that outputs reuse from
donated arguments), and turns XLA's out-of-memory refusal into a "does not fit" with the numbers XLA gave.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from typing import Any

import jax
import jax.numpy as jnp

from grm_jax.aot import cost, traffic
from grm_jax.aot.programs import Program

FINDING_BYTES = 100 * 10**6  # a replicated tensor above this, per chip, is worth a look
HEADROOM = 0.10  # a preset must leave this much of the chip free


@dataclasses.dataclass
class Result:
  name: str
  shape: str
  compile_seconds: float
  fits: bool
  capacity: int  # bytes per chip
  argument: int = 0
  output: int = 0
  temp: int = 0
  alias: int = 0
  needed: int = 0  # argument + output + temp - alias
  resident: int = 0  # what the stage keeps on the chip beside the program (Program.resident)
  resident_parts: dict[str, int] = dataclasses.field(default_factory=dict)
  error: str = ""
  flops: float = 0.0  # analytic, per chip
  xla_flops: float | None = None  # XLA's count, per chip (loop-free programs, or extrapolated twins)
  hbm_bytes: float = 0.0  # analytic, per chip
  xla_bytes: float | None = None  # XLA's "bytes accessed" (loop-free programs only; counts on-chip copies too)
  hbm_moved: float | None = None  # HBM traffic counted from the optimized HLO (traffic.py; loop-free programs)
  hbm_by_kind: dict[str, float] = dataclasses.field(default_factory=dict)
  must_bytes: float = 0.0
  seconds: float = 0.0  # roofline time of one call
  bound: str = ""
  tokens_per_second: float = 0.0
  mfu: float = 0.0
  replicated: list[tuple[str, int]] = dataclasses.field(default_factory=list)

  @property
  def total(self) -> int:
    """Bytes per chip while the program runs: its own and the stage's resident arrays."""
    return self.needed + self.resident

  @property
  def headroom(self) -> float:
    return 1.0 - self.total / self.capacity if self.capacity else 0.0

  @property
  def fits_with_headroom(self) -> bool:
    return self.fits and self.headroom >= HEADROOM

  @property
  def flops_ratio(self) -> float | None:
    return self.xla_flops / self.flops if self.xla_flops and self.flops else None

  @property
  def bytes_ratio(self) -> float | None:
    """HBM bytes the compiled program moves / the weights and KV cache it must read."""
    return self.hbm_moved / self.must_bytes if self.hbm_moved and self.must_bytes else None

  @property
  def xla_bytes_ratio(self) -> float | None:
    return self.xla_bytes / self.must_bytes if self.xla_bytes and self.must_bytes else None

  def as_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d.update(total=self.total, headroom=self.headroom, fits_with_headroom=self.fits_with_headroom,
             flops_ratio=self.flops_ratio,
             bytes_ratio=self.bytes_ratio, xla_bytes_ratio=self.xla_bytes_ratio)
    return d


_OOM = re.compile(r"([\d.]+)\s*([KMGT]?)i?B?\)?\s*exceeds available HBM \(([\d.]+)\s*([KMGT]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_oom(message: str) -> tuple[int, int] | None:
  """(bytes needed, bytes available) from XLA:TPU's RESOURCE_EXHAUSTED message, if it says."""
  m = _OOM.search(message)
  if not m:
    return None
  return int(float(m.group(1)) * _UNITS[m.group(2)]), int(float(m.group(3)) * _UNITS[m.group(4)])


def hbm_capacity(device) -> int | None:
  """The HBM XLA:TPU lets a program use on this chip, read from its own refusal of an oversized program."""
  sharding = jax.sharding.SingleDeviceSharding(device)
  big = jax.ShapeDtypeStruct((1 << 20, 1 << 20), jnp.float32, sharding=sharding)  # 4 TiB of temporaries
  try:
    jax.jit(lambda x: x * 2 + 1).lower(big).compile()
  except Exception as e:  # noqa: BLE001 - XLA's error type varies across jax versions
    parsed = parse_oom(str(e))
    return parsed[1] if parsed else None
  return None


def replicated_tensors(args, devices: int) -> list[tuple[str, int]]:
  """(path, bytes per chip) of argument leaves that every chip holds whole, largest first."""
  out = []
  for path, a in jax.tree_util.tree_flatten_with_path(args)[0]:
    if devices <= 1 or getattr(a, "sharding", None) is None:
      continue
    if tuple(a.sharding.shard_shape(a.shape)) == tuple(a.shape) and len(a.shape):
      out.append((jax.tree_util.keystr(path), math.prod(a.shape) * cost.itemsize(a.dtype)))
  return sorted(out, key=lambda x: -x[1])


def compile_program(p: Program, chip, capacity: int, chips: int, xla_flops: bool = True, period: int = 1,
                    layers: int = 1, micro_batches: int = 1) -> Result:
  """Compile `p`; memory, FLOPs (analytic and XLA's), bytes, roofline time, MFU, replicated arguments."""
  start = time.perf_counter()
  result = Result(p.name, p.shape, 0.0, False, capacity, flops=p.flops / chips, hbm_bytes=p.hbm_bytes,
                  must_bytes=p.must_bytes, replicated=replicated_tensors(p.args, chips)[:5],
                  resident_parts={k: cost.per_chip_bytes(v) for k, v in p.resident.items()})
  result.resident = sum(result.resident_parts.values())
  try:
    compiled = p.fn.lower(*p.args).compile()
  except Exception as e:  # noqa: BLE001
    result.compile_seconds = time.perf_counter() - start
    parsed = parse_oom(str(e))
    if parsed is None:
      raise
    # XLA's refusal names the temporaries only; the arguments' shards are on the chip too (donated state is
    # overwritten in place, so its outputs add nothing).
    result.temp, result.argument = parsed[0], cost.per_chip_bytes(p.args)
    result.needed, result.capacity = result.temp + result.argument, parsed[1] or capacity
    result.error = str(e).splitlines()[0][:300]
    return result
  result.compile_seconds = time.perf_counter() - start
  mem = compiled.memory_analysis()
  result.argument, result.output = int(mem.argument_size_in_bytes), int(mem.output_size_in_bytes)
  result.temp, result.alias = int(mem.temp_size_in_bytes), int(mem.alias_size_in_bytes)
  result.needed = result.argument + result.output + result.temp - result.alias
  result.fits = result.total <= capacity
  if p.must_bytes:  # loop-free by construction: XLA's counts are whole
    analysis = compiled.cost_analysis()
    result.xla_flops, result.xla_bytes = float(analysis["flops"]), float(analysis["bytes accessed"])
    moved, kinds = traffic.hbm_bytes(compiled.as_text())
    result.hbm_moved, result.hbm_by_kind = float(moved), {k: float(v) for k, v in kinds.items()}
  elif xla_flops and p.twin is not None:
    counts = []
    for depth in (period, 2 * period):
      twin = p.twin(depth)
      counts.append(float(twin.fn.lower(*twin.args).compile().cost_analysis()["flops"]))
    result.xla_flops = cost.extrapolate(counts[0], counts[1], period, layers, micro_batches)
  flops = result.xla_flops or result.flops
  result.seconds, result.bound = cost.roofline_seconds(flops, result.hbm_moved or result.hbm_bytes, chip)
  result.seconds *= p.calls
  result.tokens_per_second = p.tokens * p.calls / result.seconds if result.seconds else 0.0
  result.mfu = (p.model_flops * p.calls / chips) / (result.seconds * chip.bf16_flops) if result.seconds else 0.0
  return result
