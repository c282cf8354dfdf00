"""The one mesh description: mesh axes, logical-axis rules, shardings, multi-host start-up.

Every param and main activation carries logical axis names (`embed`, `q_heads`,
`activation_batch`, ...). A rules table, which lives in the experiment config, maps each
logical name to mesh axes. The same model code then runs on one CPU, 8 fake CPU devices, a
GPU or a TPU pod: only the mesh shape and the rules change.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with params and optimizer
state sharded), `tensor` (heads / MLP / vocab split, Megatron style).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis, tuple of mesh axes, or None (replicated).
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
  ("activation_batch", ("data", "fsdp")),
  ("activation_length", None),
  ("activation_embed", None),
  ("activation_heads", "tensor"),
  ("activation_vocab", "tensor"),
  ("cache_batch", ("data", "fsdp")),
  ("cache_heads", "tensor"),
  ("vocab", "tensor"),
  ("embed", "fsdp"),
  ("mlp", "tensor"),
  ("q_heads", "tensor"),
  ("kv_heads", "tensor"),
  ("head_dim", None),
  ("layers", None),
  ("norm", None),
)

log = logging.getLogger(__name__)


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> dict[str, int]:
  """Fill the one `-1` axis with the devices left over; check the product."""
  unknown = [a for a in shape if a not in MESH_AXES]
  if unknown:
    raise ValueError(f"mesh: unknown axis {unknown[0]!r}; axes are {MESH_AXES}")
  sizes = {a: int(shape.get(a, 1)) for a in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {free}")
  if any(s == 0 or s < -1 for s in sizes.values()):
    raise ValueError(f"mesh: axis sizes must be positive or -1, got {sizes}")
  known = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if num_devices % known:
      raise ValueError(f"mesh {sizes}: {num_devices} devices are not divisible by {known}")
    sizes[free[0]] = num_devices // known
  if math.prod(sizes.values()) != num_devices:
    raise ValueError(
      f"mesh {sizes} needs {math.prod(sizes.values())} devices but {num_devices} are available; "
      "set one axis to -1 to absorb the rest"
    )
  return sizes


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  """A ("data", "fsdp", "tensor") mesh over `devices` (default: all, across hosts)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(shape or {"fsdp": -1}, len(devices))
  dims = tuple(sizes[a] for a in MESH_AXES)
  try:
    arr = mesh_utils.create_device_mesh(dims, devices=devices)
  except Exception:  # e.g. fake CPU devices with no topology: plain order is fine
    arr = np.asarray(devices, dtype=object).reshape(dims)
  return Mesh(arr, MESH_AXES)


def single_device_mesh(device=None) -> Mesh:
  """A 1x1x1 mesh on `device` (default: this process's first device, which is where
  un-sharded jit outputs land; `jax.devices()[0]` would belong to process 0 on every host)."""
  device = device or jax.local_devices()[0]
  return Mesh(np.asarray([device], dtype=object).reshape(1, 1, 1), MESH_AXES)


def _as_rules(rules) -> dict[str, tuple[str, ...]]:
  out = {}
  for name, axes in rules:
    if axes is None:
      out[name] = ()
    elif isinstance(axes, str):
      out[name] = (axes,)
    else:
      out[name] = tuple(axes)
  return out


def logical_to_spec(
  names: Sequence[str | None], rules, mesh: Mesh | None = None, shape: Sequence[int] | None = None
) -> PartitionSpec:
  """PartitionSpec for an array with these logical axis names.

  A mesh axis is used at most once per array (first name wins). With `mesh` and `shape`, an
  array dimension that the mesh axes do not divide is left replicated rather than failing,
  e.g. SmolLM2's 3 KV heads on tensor=2.
  """
  table = _as_rules(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(names):
    axes = tuple(a for a in table.get(name, ()) if a not in used) if name else ()
    if mesh is not None:
      axes = tuple(a for a in axes if mesh.shape[a] > 1)
    if mesh is not None and shape is not None and axes:
      size = math.prod(mesh.shape[a] for a in axes)
      if shape[i] % size:
        log.debug("axis %s (%d) not divisible by mesh axes %s: replicated", name, shape[i], axes)
        axes = ()
    used.update(axes)
    spec.append(None if not axes else axes[0] if len(axes) == 1 else axes)
  return PartitionSpec(*spec)


def override(rules, **names) -> tuple:
  """`rules` with some logical names mapped anew, e.g. override(rules, embed=None): weights not split over fsdp."""
  return tuple((n, names[n]) if n in names else (n, axes) for n, axes in rules) + tuple(
    (n, a) for n, a in names.items() if n not in dict(rules))


def named_sharding(mesh: Mesh, names: Sequence[str | None], rules, shape: Sequence[int]) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(names, rules, mesh, shape))


def constrain(x, names, mesh: Mesh | None, rules):
  """Sharding constraint on an activation inside jit (no-op without a mesh)."""
  if mesh is None or not rules:
    return x
  return jax.lax.with_sharding_constraint(x, named_sharding(mesh, names, rules, x.shape))


def tree_shardings(logical_tree, shapes_tree, mesh: Mesh, rules):
  """NamedShardings for a pytree, given its logical names and shapes (same structure)."""
  return jax.tree_util.tree_map(
    lambda names, s: named_sharding(mesh, tuple(names), rules, s.shape),
    logical_tree,
    shapes_tree,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def batch_sharding(mesh: Mesh, rules, shape: Sequence[int], names=("activation_batch", "activation_length")):
  """The sharding `shard_batch` gives an array of this shape (names padded with None / cut to its rank)."""
  names = (tuple(names) + (None,) * len(shape))[: len(shape)]
  return named_sharding(mesh, names, rules, shape)


def shard_batch(x: np.ndarray | jax.Array, mesh: Mesh, rules, names=("activation_batch", "activation_length")):
  """Place a host batch (global on every host) with its batch axis over data/fsdp."""
  sharding = batch_sharding(mesh, rules, np.shape(x), names)
  arr = np.asarray(x)
  return jax.make_array_from_callback(arr.shape, sharding, lambda idx: arr[idx])


def to_host(x) -> np.ndarray:
  """The full value of a (possibly multi-host) global array as a numpy array on every host."""
  if getattr(x, "is_fully_addressable", True):
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def describe(tree, shardings) -> list[str]:
  """One line per leaf: path, shape, PartitionSpec (so tests and logs show where params live)."""
  lines = []
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  flat_s = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), s in zip(flat, flat_s, strict=True):
    lines.append(f"{jax.tree_util.keystr(path):50s} {str(tuple(leaf.shape)):28s} {s.spec}")
  return lines


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  local_device_ids: Sequence[int] | None = None,
) -> bool:
  """Start JAX's multi-host runtime once per process; True when running multi-process.

  With no arguments, JAX's own cluster detection is used (Cloud TPU pods, GKE, SLURM, Open MPI);
  when it finds no cluster this is a single-process run and nothing is started. Give the
  arguments explicitly for a hand-made cluster (e.g. two processes on localhost in the tests).
  Must run before anything touches a JAX device.
  """
  if jax.distributed.is_initialized():
    return jax.process_count() > 1
  explicit = coordinator_address is not None or num_processes is not None
  try:
    jax.distributed.initialize(
      coordinator_address=coordinator_address,
      num_processes=num_processes,
      process_id=process_id,
      local_device_ids=local_device_ids,
    )
  except ValueError as e:
    if explicit:
      raise
    log.debug("no cluster detected (%s): single-process run", e)
    return False
  return jax.process_count() > 1
