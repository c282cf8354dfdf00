"""One process of the 2-process CPU cluster that tests/test_multihost.py starts.

Each process owns 4 fake CPU devices; together they form the global 8-device mesh
{data: 2, fsdp: 2, tensor: 2}. The process builds the tiny model from a seed, loads the same
model from the checkpoint the parent wrote, runs `models.logits` on a fixed batch with both,
gathers the global logits to host and writes them as .npy files for the parent to compare.

Usage: python tests/multihost_worker.py PROCESS_ID NUM_PROCESSES PORT CHECKPOINT_DIR OUT_DIR
"""

from __future__ import annotations

import os
import sys

# Before JAX starts its backends: 4 CPU devices per process (the parent sets these too).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

FAMILY = "gemma2"
MESH = {"data": 2, "fsdp": 2, "tensor": 2}


def config():
  from grm_jax import models

  return models.tiny(FAMILY, num_heads=4, num_kv_heads=2)


def batch(cfg):
  """The fixed batch: random tokens, rows 1 and 3 left-padded."""
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, cfg.vocab_size, size=(8, 10), dtype=np.int32)
  mask = np.ones(tokens.shape, bool)
  for row, pad in ((1, 3), (3, 6), (6, 1)):
    mask[row, :pad] = False
    tokens[row, :pad] = 0
  return tokens, mask


def spec_json(arr) -> list:
  """An array's PartitionSpec as JSON: one entry per dimension, None / axis / [axes]."""
  spec = list(arr.sharding.spec) + [None] * (arr.ndim - len(arr.sharding.spec))
  return [a if a is None or isinstance(a, str) else list(a) for a in spec]


def main(argv: list[str]) -> None:
  process_id, num_processes, port = (int(a) for a in argv[:3])
  ckpt, out = argv[3], argv[4]

  # Cross-process collectives on CPU go through gloo: the default in JAX 0.10, set explicitly
  # because older JAX defaulted to "none", which fails at the first cross-process all-gather.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_default_matmul_precision", "highest")

  from grm_jax import models, parallel

  parallel.initialize_distributed(
    coordinator_address=f"localhost:{port}", num_processes=num_processes, process_id=process_id
  )
  assert jax.process_index() == process_id, (jax.process_index(), process_id)
  assert jax.process_count() == num_processes
  assert jax.local_device_count() == 4 and jax.device_count() == 4 * num_processes

  mesh = parallel.make_mesh(MESH)
  cfg = config()
  tokens, mask = batch(cfg)

  def gather(x) -> np.ndarray:
    # The logits are spread over both processes; gathering is a collective (process_allgather).
    assert not x.is_fully_addressable
    return parallel.to_host(x)

  info: dict = {
    "process_index": jax.process_index(),
    "local_devices": [d.id for d in jax.local_devices()],
    "mesh_devices": [d.id for d in mesh.devices.flat],
  }

  with parallel.use_mesh(mesh):
    built = models.from_config(cfg, seed=0)
  q = built.params["layers"]["attn"]["q"]
  info["q_spec"] = spec_json(q)
  info["q_local_shards"] = [list(s.data.shape) for s in q.addressable_shards]
  out_built = models.logits(built, tokens, mask)
  info["logits_spec"] = spec_json(out_built)
  info["logits_local_shards"] = [list(s.data.shape) for s in out_built.addressable_shards]
  np.save(os.path.join(out, f"built_{process_id}.npy"), gather(out_built))

  with parallel.use_mesh(mesh):
    loaded = models.load(ckpt, tokenizer=False)
  for a, b in zip(jax.tree_util.tree_leaves(built.params), jax.tree_util.tree_leaves(loaded.params), strict=True):
    assert a.sharding.is_equivalent_to(b.sharding, a.ndim)
  np.save(os.path.join(out, f"loaded_{process_id}.npy"), gather(models.logits(loaded, tokens, mask)))

  # A per-process single-device model (no mesh) must live on this process's own device.
  local = models.load(ckpt, tokenizer=False)
  np.save(os.path.join(out, f"local_{process_id}.npy"), np.asarray(models.logits(local, tokens, mask)))

  # Export from a model whose shards are spread over both processes (fsdp over all 8
  # devices, so no process holds a whole tensor): every process joins the gather, process 0
  # writes.
  with parallel.use_mesh(parallel.make_mesh({"fsdp": -1})):
    spread = models.load(ckpt, tokenizer=False)
  assert not spread.params["embed"].is_fully_addressable
  models.save_pretrained(spread, os.path.join(out, "saved"))

  with open(os.path.join(out, f"info_{process_id}.json"), "w") as f:
    json.dump(info, f)
  print(f"process {process_id}: done", flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
