"""The one mesh description: mesh axes, logical-axis rules, shardings, multi-host start-up.

Every param and main activation carries logical axis names (`embed`, `q_heads`,
`activation_batch`, ...). A rules table, which lives in the experiment config, maps each
logical name to mesh axes. The same model code then runs on one CPU, 8 fake CPU devices, a
GPU or a TPU pod: only the mesh shape and the rules change.

Mesh axes: `data` (pure data parallel), `fsdp` (data parallel with params and optimizer
state sharded), `tensor` (heads / MLP / vocab split, Megatron style).

The mesh is set once per program scope (`use_mesh`: a stage, a server, a test), not passed around: shardings and
activation constraints (`named_sharding`, `constrain`, `shard_batch`, ...) read the current scope, and a program
builder decorated with `per_mesh` is cached per scope and returns a program `bound` to the scope it was built for.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.metadata
import importlib.util
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

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


def normalize_rules(rules) -> tuple[tuple[str, Any], ...]:
  """`rules` as a hashable table: (name, None | axis | tuple of axes) pairs (a config read back from JSON has lists)."""
  def axes(a):
    return a if a is None or isinstance(a, str) else tuple(a)

  return tuple((str(name), axes(a)) for name, a in rules)


# --------------------------------------------------------------------------- the mesh scope


class Scope(NamedTuple):
  """Where the code running now places its arrays: a mesh (None: one device, plain jit) and the logical-axis rules
  (empty without a mesh)."""

  mesh: Mesh | None
  rules: tuple


NO_MESH = Scope(None, ())
_SCOPE: contextvars.ContextVar[Scope] = contextvars.ContextVar("grm_jax_mesh_scope", default=NO_MESH)


def _scope_of(mesh: Mesh | None, rules) -> Scope:
  return Scope(mesh, normalize_rules(rules)) if mesh is not None else NO_MESH


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None, rules=DEFAULT_RULES) -> Iterator[Mesh | None]:
  """Set the mesh and rules once for the code inside (a stage, a server, a test): the shardings of everything it
  builds follow them. `mesh=None` is one device with plain jit (no sharding constraint). Scopes nest; a scope is
  per thread (a `contextvars.ContextVar`), so programs built here carry theirs (`per_mesh`, `bound`)."""
  with _entered(_scope_of(mesh, rules)):
    yield mesh


@contextlib.contextmanager
def _entered(s: Scope) -> Iterator[None]:
  token = _SCOPE.set(s)
  try:
    yield
  finally:
    _SCOPE.reset(token)


def scope() -> Scope:
  """The current (mesh, rules)."""
  return _SCOPE.get()


def current_mesh() -> Mesh | None:
  return _SCOPE.get().mesh


def batch_shards() -> int:
  """Devices a batch's rows split over (data x fsdp) in the current scope; 1 without a mesh."""
  mesh = current_mesh()
  return 1 if mesh is None else int(mesh.shape.get("data", 1) * mesh.shape.get("fsdp", 1))


class Bound:
  """A function (usually a jitted program) that always runs under the scope it was built for, whatever scope (or
  thread: a scope does not cross threads) calls it: calling it, and its `lower` / `trace` / `eval_shape`, enter that
  scope first. Every other attribute is the wrapped function's."""

  def __init__(self, fn: Callable, s: Scope):
    self.__wrapped__, self.scope = fn, s
    functools.update_wrapper(self, fn, updated=())

  def __call__(self, *args, **kwargs):
    with _entered(self.scope):
      return self.__wrapped__(*args, **kwargs)

  def _in_scope(self, name: str):
    method = getattr(self.__wrapped__, name)

    def run(*args, **kwargs):
      with _entered(self.scope):
        return method(*args, **kwargs)

    return run

  def __getattr__(self, name: str):
    if name == "__wrapped__":  # not set yet (a copy being built): no recursion
      raise AttributeError(name)
    if name in ("lower", "trace", "eval_shape"):
      return self._in_scope(name)
    return getattr(self.__wrapped__, name)

  def __repr__(self) -> str:
    return f"Bound({self.__wrapped__!r}, mesh={None if self.scope.mesh is None else dict(self.scope.mesh.shape)})"


def bound(fn: Callable, s: Scope | None = None) -> Bound:
  """`fn` pinned to scope `s` (default: the current one), see `Bound`."""
  return Bound(fn, scope() if s is None else s)


def per_mesh(maxsize: int | None = 32, *, program: bool = True):
  """Decorator for a builder of programs (or of anything that depends on the mesh): one result per (arguments,
  current scope), kept in an lru_cache of `maxsize`. The builder runs under that scope, and a program it returns
  (`program=True`) is `bound` to it, so the program's trace never depends on its caller's scope. The decorated
  function keeps `cache_info` and `cache_clear`."""

  def decorate(builder: Callable) -> Callable:
    @functools.lru_cache(maxsize=maxsize)
    def build(s: Scope, *args, **kwargs):
      with _entered(s):
        out = builder(*args, **kwargs)
      return bound(out, s) if program else out

    @functools.wraps(builder)
    def cached(*args, **kwargs):
      return build(scope(), *args, **kwargs)

    cached.cache_info, cached.cache_clear = build.cache_info, build.cache_clear
    return cached

  return decorate


# --------------------------------------------------------------------------- shardings


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int] | None = None, rules=None) -> PartitionSpec:
  """PartitionSpec for an array with these logical axis names, under the current scope's rules (or `rules`).

  A mesh axis is used at most once per array (first name wins). Under a mesh, axes of size 1 are left out, and with
  `shape` an array dimension that the mesh axes do not divide is left replicated rather than failing, e.g. SmolLM2's
  3 KV heads on tensor=2.
  """
  mesh, scope_rules = scope()
  table = _as_rules(scope_rules if rules is None else rules)
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


def _mesh_or_fail(what: str) -> Mesh:
  mesh = current_mesh()
  if mesh is None:
    raise ValueError(f"{what} needs a mesh: call it inside `parallel.use_mesh(mesh)`")
  return mesh


def named_sharding(names: Sequence[str | None], shape: Sequence[int]) -> NamedSharding:
  """The current mesh's sharding of an array of `shape` with these logical names."""
  return NamedSharding(_mesh_or_fail("named_sharding"), logical_to_spec(names, shape))


def constrain(x, names):
  """Sharding constraint on an activation inside jit, by the current scope (no-op without a mesh)."""
  mesh, rules = scope()
  if mesh is None or not rules:
    return x
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, logical_to_spec(names, x.shape)))


def tree_shardings(logical_tree, shapes_tree, rules=None):
  """NamedShardings on the current mesh for a pytree, given its logical names and shapes (same structure); `rules`
  overrides the scope's (e.g. the sampler's `override(rules, embed=None)`)."""
  mesh = _mesh_or_fail("tree_shardings")
  return jax.tree_util.tree_map(
    lambda names, s: NamedSharding(mesh, logical_to_spec(tuple(names), s.shape, rules)),
    logical_tree,
    shapes_tree,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def batch_sharding(shape: Sequence[int], names=("activation_batch", "activation_length")) -> NamedSharding:
  """The sharding `shard_batch` gives an array of this shape (names padded with None / cut to its rank)."""
  names = (tuple(names) + (None,) * len(shape))[: len(shape)]
  return named_sharding(names, shape)


def shard_batch(x: np.ndarray | jax.Array, names=("activation_batch", "activation_length")):
  """Place a host batch (global on every host) with its batch axis over data/fsdp of the current mesh."""
  sharding = batch_sharding(np.shape(x), names)
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


_TPU_HOST_VARS = ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "COLAB_TPU_ADDR")


def tpu_attached(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> bool:
  """Whether this machine looks like it has TPU chips: their device files (`/dev/accel*` on v2-v5p, `/dev/vfio/<n>` on
  v5e and later) or the variables GKE (or Colab) sets for libtpu. Not any `TPU_*`: importing jax sets
  TPU_LIBRARY_PATH and TPU_SKIP_MDS_QUERY itself where libtpu is installed."""
  environ = os.environ if environ is None else environ
  if any(environ.get(k) for k in _TPU_HOST_VARS):
    return True
  try:
    names = os.listdir(dev)
  except OSError:
    return False
  vfio = os.path.join(dev, "vfio")
  groups = os.listdir(vfio) if os.path.isdir(vfio) else []  # numbered IOMMU groups; `vfio/vfio` is on many machines
  return any(n.startswith("accel") for n in names) or any(g.isdigit() for g in groups)


def _jax_platforms() -> str | None:
  return jax.config.jax_platforms


def _other_pjrt_plugins() -> bool:
  """A GPU (or other) PJRT plugin: an entry point in the `jax_plugins` group or a module of that namespace package."""
  entry_points = importlib.metadata.entry_points(group="jax_plugins")
  return bool(entry_points) or importlib.util.find_spec("jax_plugins") is not None


def should_pin_cpu(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> bool:
  """No TPU attached, no other accelerator plugin installed, no platform chosen by the user (JAX_PLATFORMS,
  `jax_platforms`): CPU is then the only backend JAX could start anyway."""
  environ = os.environ if environ is None else environ
  if environ.get("JAX_PLATFORMS") or _jax_platforms():
    return False
  return not tpu_attached(environ, dev) and not _other_pjrt_plugins()


def pin_cpu_without_tpu(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> bool:
  """Pin JAX to its CPU backend where `should_pin_cpu`; True when it did. Why: JAX tries its TPU backend first, and
  where libtpu is installed (`make env` installs it for `python -m grm_jax.aot`, which compiles with it on a CPU)
  libtpu prints E-level lines (`unexpected worker hostname`) before every CPU run, and without it JAX logs
  "Unable to initialize backend 'tpu'". Call before anything touches a device."""
  if not should_pin_cpu(environ, dev):
    return False
  jax.config.update("jax_platforms", "cpu")
  return True


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
  except KeyError as e:
    # Older jax detects SLURM from SLURM_JOB_ID alone and then reads the step's variables: in an allocation reached
    # by ssh or salloc (no srun step) SLURM_STEP_NODELIST & co. are missing. That is one process, not a cluster.
    if explicit:
      raise
    log.warning("cluster detection stopped at a missing environment variable %s (a SLURM allocation without an srun "
                "step?): single-process run; start the processes with srun for a multi-process one", e)
    return False
  return jax.process_count() > 1
