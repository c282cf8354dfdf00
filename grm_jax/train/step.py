"""The train state and the one jitted, sharded train step that every stage uses.

A stage supplies a loss function `loss_fn(params, micro_batch) -> (Weighted loss, {name: Weighted metric})`
(see losses.py). The step runs it over M micro-batches in a `lax.scan`, accumulating the gradient of the loss's
unreduced *sum* and its denominator separately, and divides once at the end. So M micro-batches of any lengths
give the same update as one batch: token-mean over the whole optimizer step stays exact (the bug
TRL #2995 / #3021 shipped). Params and optimizer state keep the shardings the params were created with (fsdp);
the batch is placed with its row axis over data x fsdp of the current mesh (`place_batch`). The step is bound to the
mesh scope it was made in (`parallel.bound`): its loss traces with that scope's shardings whoever calls it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from grm_jax import parallel
from grm_jax.models import lora
from grm_jax.models.weights import compute_copy
from grm_jax.train.losses import Weighted

LossFn = Callable[[Any, Mapping[str, jax.Array]], tuple[Weighted, dict[str, Weighted]]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any


def _init(optimizer):
  def init(p):
    return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=optimizer.init(p))

  return init


def init_state(params, optimizer: optax.GradientTransformation, *, donate: bool = False) -> TrainState:
  """A fresh state; the optimizer moments are created next to their params (same shardings). With `donate` the
  state takes over the params' buffers instead of copying them (a stage's weights are then on the device once, not
  twice); the caller's `params` are deleted and must not be read again."""
  init = _init(optimizer)
  shardings = _state_shardings(jax.eval_shape(init, params), _shardings(params))
  return jax.jit(init, out_shardings=shardings, donate_argnums=(0,) if donate else ())(params)


def abstract_state(params, optimizer: optax.GradientTransformation) -> TrainState:
  """The state `init_state` would build, as ShapeDtypeStructs with their shardings; `params` may be abstract too.
  Compiling a step against it touches no device memory (grm_jax.aot compiles for TPU slices this way)."""
  abstract = jax.eval_shape(_init(optimizer), params)
  shardings = _state_shardings(abstract, _shardings(params))
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def _shardings(params):
  return jax.tree.map(lambda a: a.sharding, params)


def _state_shardings(abstract_state: TrainState, param_shardings):
  """Shardings for a TrainState: every optimizer subtree shaped like the param tree (Adam's mu and nu) takes the
  params' shardings, so fsdp shards the moments too; everything else (counts, step) is replicated."""
  leaves = jax.tree.leaves(param_shardings)
  mesh = leaves[0].mesh if isinstance(leaves[0], NamedSharding) else None
  replicated = NamedSharding(mesh, PartitionSpec()) if mesh is not None else leaves[0]
  param_struct = jax.tree.structure(param_shardings)

  def is_param_like(x):
    return jax.tree.structure(x) == param_struct

  opt = jax.tree.map(
    lambda x: param_shardings if is_param_like(x) else replicated, abstract_state.opt_state, is_leaf=is_param_like
  )
  return TrainState(step=replicated, params=param_shardings, opt_state=opt)


def make_train_step(loss_fn: LossFn, optimizer: optax.GradientTransformation, schedule=None, *, donate: bool = True,
                    compute_dtype: str | None = None, rng_seed: int | None = None):
  """jit(step)(state, batch, frozen=None) -> (state, metrics). `batch` arrays have a leading micro-batch axis
  [M, b, ...]. `frozen`: params the loss reads but the step never changes (LoRA's base weights, `models.lora.split`):
  `loss_fn` sees them joined with the state's params, gradients are taken for the state's params only, and they are
  an argument, not donated, so one copy serves the step, the sampler and the KL reference.

  `compute_dtype` (the model's, when its params are stored wider): the weights are cast once per step and each
  micro-batch's gradient is taken with respect to that copy, then added to a float32 accumulator. The decoder casts
  every weight to that dtype before use anyway, so this is the same gradient; it saves holding a float32 gradient
  per micro-batch beside the accumulator (a third of a 1.5B model's step memory on one device).

  The step runs under the mesh scope current when it is made (`parallel.bound`), whatever scope calls (or lowers) it.

  `rng_seed`: each micro-batch gets a key `mb["rng"]` for the loss's dropout (LoRA dropout), drawn from the seed and
  the state's step count, so a resumed run redraws exactly the masks the uninterrupted one drew. A loss that never
  reads it compiles to the same program.

  Returned metrics (float32 scalars): "loss" (the step's exact aggregated loss), every metric of `loss_fn` as its
  exact value over all micro-batches, "grad_norm" (before clipping), "learning_rate", "<name>/weight" for the
  loss denominator (tokens or sequences counted), and "skipped": 1 when the loss or the gradient norm was not finite
  and the state was returned unchanged (no update, no step count).
  """

  def micro(params, frozen, mb):
    def f(p):
      loss, metrics = loss_fn(lora.join(p, frozen), mb)
      return loss.total, (loss, metrics)

    grads, (loss, metrics) = jax.grad(f, has_aux=True)(params)
    return grads, loss, metrics

  def step(state: TrainState, batch, frozen=None):
    if rng_seed is not None:
      m = jax.tree.leaves(batch)[0].shape[0]
      batch = {**batch, "rng": jax.random.split(jax.random.fold_in(jax.random.key(rng_seed), state.step), m)}
    first = jax.tree.map(lambda x: x[0], batch)
    weights = state.params if compute_dtype is None else compute_copy(state.params, compute_dtype)
    _, l_shape, m_shape = jax.eval_shape(micro, weights, frozen, first)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), (state.params, l_shape, m_shape))
    grads0 = jax.tree.map(lambda z, p: jax.lax.with_sharding_constraint(z, p.sharding) if _has_named(p) else z,
                          zeros[0], state.params)
    zeros = (grads0, zeros[1], zeros[2])

    def body(acc, mb):
      out = micro(weights, frozen, mb)
      return jax.tree.map(lambda a, x: a + jnp.asarray(x).astype(a.dtype), acc, out), None

    (grads, loss, metrics), _ = jax.lax.scan(body, zeros, batch)
    denom = jnp.maximum(loss.weight, 1e-12)
    grads = jax.tree.map(lambda g: g / denom, grads)
    grad_norm = optax.global_norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # A non-finite loss or gradient must not reach the params (or Adam's moments, which would carry it on): such a
    # step keeps the state it was given, and says so; the training loop stops the stage after a few in a row.
    finite = jnp.isfinite(loss.value) & jnp.isfinite(grad_norm)
    new = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
    out = {"loss": loss.value, "loss/weight": loss.weight, "grad_norm": grad_norm,
           "skipped": 1.0 - finite.astype(jnp.float32)}
    for name, m in metrics.items():
      out[name] = m.value
    if schedule is not None:
      out["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
    return new, out

  return parallel.bound(jax.jit(step, donate_argnums=(0,) if donate else ()))


def _has_named(x) -> bool:
  return isinstance(getattr(x, "sharding", None), NamedSharding)


def split_micro_batches(batch: Mapping[str, np.ndarray], micro_batches: int) -> dict[str, np.ndarray]:
  """[B, ...] host arrays -> [M, B/M, ...]; B must be a multiple of M."""
  out = {}
  for k, v in batch.items():
    v = np.asarray(v)
    if v.shape[0] % micro_batches:
      raise ValueError(f"batch of {v.shape[0]} rows does not split into {micro_batches} micro-batches "
                       "(config optim.micro_batches must divide the batch size)")
    out[k] = v.reshape(micro_batches, v.shape[0] // micro_batches, *v.shape[1:])
  return out


def place_batch(batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
  """Host [M, b, ...] arrays -> global arrays with the row axis b over data x fsdp of the current mesh (one device
  without a mesh)."""
  if parallel.current_mesh() is None:
    return {k: jnp.asarray(v) for k, v in batch.items()}
  return {k: parallel.shard_batch(np.asarray(v), names=BATCH_NAMES) for k, v in batch.items()}


# Logical names of a step's [M, b, ...] batch arrays: micro-batches in sequence, rows over data x fsdp.
BATCH_NAMES = (None, "activation_batch")
