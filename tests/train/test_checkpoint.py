"""Checkpointer: exact round trip, retention, sharded restore, SIGTERM flag, crash safety."""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from grm_jax.train.checkpoint import Checkpointer, abstract_like


def _state(seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {
    "w": jax.random.normal(k1, (4, 3)),
    "b": jnp.arange(3, dtype=jnp.float32),
    "emb": jax.random.normal(k2, (5,)),
  }
  tx = optax.adamw(1e-3)
  opt_state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  _, opt_state = tx.update(grads, opt_state, params)  # non-trivial moments and count
  return {"params": params, "opt_state": opt_state, "step": jnp.asarray(7, jnp.int32)}


def _assert_tree_equal(a, b):
  la, ta = jax.tree.flatten(a)
  lb, tb = jax.tree.flatten(b)
  assert ta == tb
  for x, y in zip(la, lb, strict=True):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_meta_and_retention(tmp_path):
  ckpt = Checkpointer(str(tmp_path), keep=2, save_every=10, handle_sigterm=False)
  assert ckpt.latest_step() is None
  states = {s: _state(s) for s in (10, 20, 30)}
  assert not ckpt.save(5, states[10], {})  # off-cadence and not forced
  for s, st in states.items():
    assert ckpt.save(s, st, {"data_pos": s * 3, "seed": 1, "name": "rft"})
  assert not ckpt.save(30, states[30], {}, force=True)  # existing step is not overwritten
  assert ckpt.latest_step() == 30
  assert ckpt.all_steps() == [20, 30]
  ckpt.close()

  # A fresh instance (as after a restart) sees the same steps and restores exactly.
  ckpt = Checkpointer(str(tmp_path), keep=2, save_every=10, handle_sigterm=False)
  state, meta = ckpt.restore(abstract_like(states[30]))
  _assert_tree_equal(state, states[30])
  assert meta == {"data_pos": 90, "seed": 1, "name": "rft"}
  state, meta = ckpt.restore(states[20], step=20)  # concrete arrays as target
  _assert_tree_equal(state, states[20])
  assert meta["data_pos"] == 60
  with pytest.raises(FileNotFoundError, match="step 10"):
    ckpt.restore(states[20], step=10)
  ckpt.close()


def test_restore_into_mesh_sharding(tmp_path):
  mesh = Mesh(np.array(jax.devices()[:8]), ("x",))
  sharding = NamedSharding(mesh, PartitionSpec("x"))
  value = jnp.arange(32, dtype=jnp.float32).reshape(8, 4)
  ckpt = Checkpointer(str(tmp_path), save_every=1, handle_sigterm=False)
  ckpt.save(1, {"a": value}, {"k": 1})  # saved from a single-device array
  target = {"a": jax.ShapeDtypeStruct((8, 4), jnp.float32, sharding=sharding)}
  state, meta = ckpt.restore(target)
  assert state["a"].sharding == sharding
  assert len(state["a"].addressable_shards) == 8
  np.testing.assert_array_equal(np.asarray(state["a"]), np.asarray(value))
  assert meta == {"k": 1}
  ckpt.close()


def test_restore_empty_dir_names_directory(tmp_path):
  d = str(tmp_path / "nothing_here")
  ckpt = Checkpointer(d, handle_sigterm=False)
  with pytest.raises(FileNotFoundError, match="nothing_here"):
    ckpt.restore({"a": jax.ShapeDtypeStruct((2,), jnp.float32)})
  ckpt.close()


def test_sigterm_sets_flag_and_chains(tmp_path):
  seen = []
  original = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
  try:
    ckpt = Checkpointer(str(tmp_path), save_every=100)
    assert not ckpt.preempted and not ckpt.should_save(3)
    os.kill(os.getpid(), signal.SIGTERM)
    assert ckpt.preempted  # Python runs the handler before the next bytecode; we are still alive
    assert ckpt.should_save(3)
    assert seen == [signal.SIGTERM]
    assert ckpt.save(3, {"a": jnp.ones(2)}, {})
    ckpt.close()
    assert signal.getsignal(signal.SIGTERM) is not ckpt._on_sigterm  # previous handler reinstated
  finally:
    signal.signal(signal.SIGTERM, original)


_CHILD = textwrap.dedent(
  """
  import sys, jax.numpy as jnp
  from grm_jax.train.checkpoint import Checkpointer
  ckpt = Checkpointer(sys.argv[1], save_every=1, handle_sigterm=False)
  ckpt.save(1, {"a": jnp.full((256,), 1.0)}, {"step": 1})
  print("saved", flush=True)
  while True:  # keep saving big steps until the parent kills us mid-write
    step = (ckpt.latest_step() or 1) + 1
    print(f"saving {step}", flush=True)
    ckpt.save(step, {"a": jnp.full((4_000_000,), float(step))}, {"step": step})
  """
)


def test_sigkill_during_save_leaves_complete_latest(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  ckpt_dir, err_path = tmp_path / "ckpt", tmp_path / "child.stderr"

  def child_failure(what):
    """A child that crashed is a failure of the checkpointer (or of its setup), never a skip."""
    err = err_path.read_text(errors="replace")[-3000:] if err_path.exists() else ""
    return f"{what} (exit status {proc.poll()}); its stderr:\n{err}"

  with open(err_path, "wb") as err:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(ckpt_dir)], stdout=subprocess.PIPE, stderr=err, env=env)
  try:
    for want in (b"saved", b"saving 2"):
      line = proc.stdout.readline()
      if line.strip() != want:
        proc.wait(timeout=30)
        pytest.fail(child_failure(f"the child printed {line!r}, not {want!r}"))
    # Let it get into the middle of a later (large) save, then kill it without warning.
    import time

    time.sleep(1.5)
    if proc.poll() is not None:  # it must still be saving when killed: a crash is not the kill under test
      pytest.fail(child_failure("the child died before it was killed"))
    proc.kill()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, child_failure("the child was not ended by the SIGKILL")
    # A child whose save raised may still be alive at the kill (tearing down jax and orbax's threads takes a while).
    assert b"Traceback" not in err_path.read_bytes(), child_failure("the child raised before it was killed")
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  ckpt = Checkpointer(str(ckpt_dir), handle_sigterm=False)
  step = ckpt.latest_step()
  assert step is not None
  state, meta = ckpt.restore({"a": jax.ShapeDtypeStruct((256 if step == 1 else 4_000_000,), jnp.float32)})
  assert meta == {"step": step}
  np.testing.assert_array_equal(np.asarray(state["a"]), float(step))
  # The resumed run can write the step the killed one left half-done (orbax replaces the stale tmp directory).
  assert ckpt.save(step + 1, {"a": jnp.zeros(2)}, {}, force=True)
  assert ckpt.latest_step() == step + 1
  ckpt.close()
