"""Checkpoint / resume for the training stages: a thin wrapper over `orbax.checkpoint.CheckpointManager`.

One checkpoint step holds two items: `state`, any pytree of jax arrays (params, optimizer state, step counter), and
`meta`, a JSON dict with whatever else the stage needs to resume bit-for-bit (data position, rng seed, config hash).

Crash safety comes from orbax, not from this module: orbax writes each step into a temporary directory and renames
it into place only once every item (on every host) is written, and `latest_step` / `all_steps` only list finalized
steps. A process killed mid-save therefore leaves at worst a stray tmp directory, never a half checkpoint that a
restart would pick up. `save` waits for the write to finish, so once it returns the step is durable.

Multi-host: orbax coordinates the hosts (only process 0 finalizes, each host writes its own shards), which means
every process must call `save` and `restore` with the same step, and must agree on `should_save`.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from grm_jax import files, parallel
from grm_jax.models import lora
from grm_jax.train.errors import NonFiniteParams

log = logging.getLogger(__name__)

_STATE = "state"
_META = "meta"


def abstract_like(tree: Any) -> Any:
  """Restore target mirroring `tree`: arrays become ShapeDtypeStructs that keep their sharding.

  Restoring into such a target makes each host read only its own shards, straight into the mesh, instead of
  materialising the full arrays on one host first. Leaves that are not arrays (python scalars) pass through.
  """

  def one(x):
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    return x

  return jax.tree.map(one, tree)


class Checkpointer:
  """Periodic + preemption-triggered checkpoints of (state pytree, JSON meta), keeping the `keep` newest steps.

  Typical loop::

    ckpt = Checkpointer(dir, save_every=100)
    if ckpt.latest_step() is not None:
      state, meta = ckpt.restore(abstract_like(state))
    for step in range(start, n):
      ...
      if ckpt.should_save(step):
        ckpt.save(step, state, meta)
      if ckpt.preempted:
        break
    ckpt.close()

  SIGTERM (TPU preemption notice, SLURM time limit, `kill`) only sets a flag: exiting inside the handler could cut
  a save in half or skip the final one, so the loop is expected to save at its next step boundary and return.
  On multi-host runs the local flag is not used: hosts receive the signal at different steps and would disagree on
  `should_save` (a collective), so the decision comes from JAX's preemption sync service via orbax
  (`reached_preemption`), which picks one step for all hosts; JAX installs its own SIGTERM listener for that, which
  a Python handler would displace.
  """

  def __init__(self, directory: str, *, keep: int = 3, save_every: int = 100, handle_sigterm: bool = True):
    if save_every < 1:
      raise ValueError(f"save_every must be >= 1, got {save_every}")
    self.directory = str(directory)
    self.save_every = save_every
    self._preempted = False
    self._prev_handler: Any = None
    self._installed_handler = False
    # Save cadence is decided by `should_save` here (it also covers preemption), so orbax is told to accept any
    # step; `max_to_keep` is left to orbax, which only garbage-collects after a newer step is finalized.
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=1, create=True)
    self._manager = ocp.CheckpointManager(files.absolute(self.directory), options=options, item_names=(_STATE, _META))
    if handle_sigterm and jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      # Python only allows signal handlers in the main thread; elsewhere (e.g. a notebook worker) just skip.
      self._prev_handler = signal.getsignal(signal.SIGTERM)
      signal.signal(signal.SIGTERM, self._on_sigterm)
      self._installed_handler = True

  def _on_sigterm(self, signum, frame):
    self._preempted = True
    log.warning("SIGTERM received: will checkpoint at the next step boundary and stop")
    # Chain so that another component's handler (e.g. a logger flushing) still runs; SIG_DFL is not chained
    # because that would terminate the process before we can save.
    if callable(self._prev_handler):
      self._prev_handler(signum, frame)

  @property
  def preempted(self) -> bool:
    """True once a SIGTERM was seen: the training loop should save and exit."""
    return self._preempted

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def should_save(self, step: int) -> bool:
    if step % self.save_every == 0 or self._preempted:
      return True
    if jax.process_count() > 1 and self._manager.reached_preemption(step):
      self._preempted = True
      return True
    return False

  def save(self, step: int, state: Any, meta: dict, *, force: bool = False) -> bool:
    """Write `step` if `should_save(step)` (or `force`); returns whether a checkpoint was written.

    Blocks until the checkpoint is finalized, so a SIGKILL after return cannot lose it. A step that already exists
    is not rewritten (a resumed run reaching its restore step again): returns False.
    """
    if not (force or self.should_save(step)):
      return False
    if step in self._manager.all_steps():
      log.info("checkpoint step %d already exists in %s; not overwriting", step, self.directory)
      return False
    args = ocp.args.Composite(**{_STATE: ocp.args.StandardSave(state), _META: ocp.args.JsonSave(dict(meta))})
    saved = self._manager.save(step, args=args, force=True)
    self._manager.wait_until_finished()
    if saved:
      log.info("saved checkpoint step %d to %s", step, self.directory)
    return bool(saved)

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """Restore (state, meta) of `step` (None: the latest) with the shapes, dtypes and shardings of `target`.

    `target` is a pytree of ShapeDtypeStructs with shardings (see `abstract_like`) or of concrete arrays; the
    restored arrays come back sharded like the target.
    """
    if step is None:
      step = self._manager.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint found in {self.directory}")
    elif step not in self._manager.all_steps():
      raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory} (have {self.all_steps()})")
    args = ocp.args.Composite(
      **{_STATE: ocp.args.StandardRestore(abstract_like(target)), _META: ocp.args.JsonRestore()}
    )
    restored = self._manager.restore(step, args=args)
    return restored[_STATE], dict(restored[_META] or {})

  def close(self) -> None:
    """Finish pending writes and give SIGTERM back to whoever had it before."""
    self._manager.wait_until_finished()
    self._manager.close()
    if self._installed_handler and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
      signal.signal(signal.SIGTERM, self._prev_handler if self._prev_handler is not None else signal.SIG_DFL)
    self._installed_handler = False

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# --------------------------------------------------------------------------------------------------
# A stage's output params (no optimizer state): what later stages and users load.


@jax.jit
def _all_finite(params) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))


def save_params(path: str, params, model=None) -> None:
  """Params only (no optimizer state): what later stages and users load. Refuses params that are not all finite: the
  next stage would start from them (the train step already skips non-finite updates; this is the last guard).
  `model` (the model `params` were trained on): when it carries LoRA adapters, `params` are the trained part only
  (adapters, a head) and `trained.json` beside them names the base and the adapters' shape, which `restore_trained`
  checks."""
  if not bool(parallel.to_host(_all_finite(params))):
    raise NonFiniteParams(f"{path}: refusing to save params with NaN or infinite values")
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(files.absolute(path), params, force=True)
    ckpt.wait_until_finished()
  if model is not None and model.config.lora.rank:
    files.write_json(files.path(path) / TRAINED_JSON, {"base": model.source, "lora": model.config.lora.as_json()})


TRAINED_JSON = "trained.json"


def restore_trained(path: str, params, spec) -> Any:
  """`params` with what a stage saved at `path` put in: the whole tree after full fine-tuning, the adapters (and a
  head) after LoRA, joined onto `params`' base weights (the same arrays, not copied). `spec`: the `Lora` of the model
  `params` belong to; a folder saved with other adapters (or none) is one error naming the setting to use."""
  facts = files.path(path) / TRAINED_JSON
  saved = files.read_json(facts)["lora"] if files.exists(facts) else None
  ours = spec.as_json()
  if saved != ours:
    how = (f"--config.model.lora.rank={saved['rank']} (alpha {saved['alpha']:g}, targets {','.join(saved['targets'])})"
           if saved else "--config.model.lora.rank=0")
    raise ValueError(f"{path}: saved {'with LoRA adapters ' + str(saved) if saved else 'as full weights'}, but the "
                     f"model to load them onto has {'adapters ' + str(ours) if ours else 'none'}: load it with {how}")
  trained, frozen = lora.split(params, spec)
  return lora.join(restore_params(path, trained), frozen)


def restore_params(path: str, like) -> Any:
  """Params saved by `save_params`, placed like `like` (same shapes and shardings)."""
  path = files.absolute(path)
  if not path.is_dir():
    raise FileNotFoundError(f"{path}: no saved params (run the stage that writes it first)")
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), like)
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(path, target)
