"""Accelerators we plan for: TPU slices by their Cloud names, and the chips' published limits.

TPU slice names count TensorCores for v4 and v5p (two per chip: v5p-128 is 64 chips) and chips for v5e and v6e
(v5e-8 is 8 chips). v5p-2 (v4-2) is one chip: no slice Cloud TPU rents, but a topology libtpu describes, so one
device with the chip's HBM plans a one-GPU preset (`--hbm_gib` then sets the GPU's memory as the limit).
`tpu_devices` turns a name into the slice's devices through libtpu's topology description, so XLA:TPU compiles for
it on a machine with no TPU. GPUs cannot be compiled for without one: `GPUS` holds the same limits for the
analytic estimate.
"""

from __future__ import annotations

import dataclasses
import os
import re

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int  # per chip, as published
  bf16_flops: float  # dense peak per chip, FLOP/s
  hbm_bandwidth: float  # bytes/s per chip
  source: str  # where the three numbers come from


# Published per-chip numbers (bf16 dense peak, HBM capacity and bandwidth).
TPU_CHIPS = {
  "v4": Chip("TPU v4", 32 * GIB, 275e12, 1200e9, "https://cloud.google.com/tpu/docs/v4"),
  "v5e": Chip("TPU v5e", 16 * GIB, 197e12, 819e9, "https://cloud.google.com/tpu/docs/v5e"),
  "v5p": Chip("TPU v5p", 95 * GIB, 459e12, 2765e9, "https://cloud.google.com/tpu/docs/v5p"),
  "v6e": Chip("TPU v6e (Trillium)", 32 * GIB, 918e12, 1640e9, "https://cloud.google.com/tpu/docs/v6e"),
}

GPUS = {
  "a100-40gb": Chip("NVIDIA A100 40GB", 40 * 10**9, 312e12, 1555e9,
                    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet.pdf"),
  "a100-80gb": Chip("NVIDIA A100 80GB SXM", 80 * 10**9, 312e12, 2039e9,
                    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet.pdf"),
  "h100-80gb": Chip("NVIDIA H100 SXM 80GB", 80 * 10**9, 989e12, 3350e9,
                    "https://www.nvidia.com/en-us/data-center/h100/"),
}

# Chips -> physical shape of the slice (Cloud TPU's supported single-slice topologies).
_SHAPES_3D = {1: (1, 1, 1), 4: (2, 2, 1), 8: (2, 2, 2), 16: (2, 2, 4), 32: (2, 4, 4), 64: (4, 4, 4), 128: (4, 4, 8),
              256: (4, 8, 8), 512: (8, 8, 8), 1024: (8, 8, 16), 2048: (8, 16, 16), 4096: (16, 16, 16)}
_SHAPES_2D = {1: (1, 1), 4: (2, 2), 8: (2, 4), 16: (4, 4), 32: (4, 8), 64: (8, 8), 128: (8, 16), 256: (16, 16)}
_CORES_PER_CHIP = {"v4": 2, "v5p": 2, "v5e": 1, "v6e": 1}


class TopologyError(ValueError):
  """A slice name we cannot turn into devices."""


@dataclasses.dataclass(frozen=True)
class Slice:
  name: str  # as given, e.g. "v5p-128"
  generation: str  # v4 | v5e | v5p | v6e
  chips: int
  shape: tuple[int, ...]

  @property
  def chip(self) -> Chip:
    return TPU_CHIPS[self.generation]

  @property
  def topology_name(self) -> str:
    return f"{self.generation}:" + "x".join(str(s) for s in self.shape)


def parse_slice(name: str) -> Slice:
  """'v5p-128' -> 64 chips in a 4x4x4 cube; fails with the names that would work."""
  m = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name.strip().lower())
  if not m:
    raise TopologyError(f"--topology={name!r}: unknown slice name; use <generation>-<size> with generation v4, v5p "
                        "(size = TensorCores, 2 per chip: v5p-128 = 64 chips), v5e or v6e (size = chips: v5e-8), "
                        "e.g. v5p-128, v4-8, v5e-1, v6e-8")
  gen, size = m.group(1), int(m.group(2))
  cores = _CORES_PER_CHIP[gen]
  shapes = _SHAPES_3D if cores == 2 else _SHAPES_2D
  chips = size // cores
  if size % cores or chips not in shapes:
    valid = ", ".join(f"{gen}-{c * cores}" for c in sorted(shapes))
    raise TopologyError(f"--topology={name!r}: {gen} slices come in these sizes: {valid}")
  return Slice(name, gen, chips, shapes[chips])


def tpu_devices(s: Slice) -> list:
  """The slice's devices from libtpu's topology description (needs the `tpu` extra: pip install 'grm_jax[tpu]')."""
  # libtpu takes a machine-wide lock so two processes cannot drive one TPU; planning drives none, and two planning
  # processes (a test suite and a CLI run) must not block each other.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  from jax.experimental import topologies  # noqa: PLC0415

  if len(s.shape) == 3:
    kw = dict(chip_config_name="megacore", chips_per_host_bounds=(min(2, s.shape[0]), min(2, s.shape[1]), 1))
  else:  # v5e / v6e hosts hold up to 8 chips (2x4)
    kw = dict(chips_per_host_bounds=(min(2, s.shape[0]), min(4, s.shape[1]), 1))
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=s.topology_name, num_slices=1, **kw)
  except Exception as e:
    raise TopologyError(f"--topology={s.name}: libtpu could not describe {s.topology_name} ({e}); is the tpu extra "
                        "installed (pip install 'jax[tpu]' at the installed jax version)?") from e
  devices = list(desc.devices)
  if len(devices) != s.chips:
    raise TopologyError(f"--topology={s.name}: libtpu gave {len(devices)} devices for {s.chips} chips")
  return devices
