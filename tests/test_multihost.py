"""Multi-host: two processes x 4 CPU devices form one 8-device mesh, like two hosts of a pod.

Both processes run tests/multihost_worker.py (JAX's own distributed runtime on localhost,
gloo collectives); each writes the gathered global logits of a mesh-built and a
checkpoint-loaded model. They must equal a single-process, single-device forward.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from grm_jax import models
from tests import multihost_worker as worker

NUM_PROCESSES = 2
TIMEOUT_S = 300  # generous for 2 shared cores; a healthy run takes well under a minute
TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _tail(path: str, n: int = 3000) -> str:
  with open(path, errors="replace") as f:
    return f.read()[-n:]


def _run_cluster(ckpt: str, out: str) -> None:
  """Start the processes, wait for all (or the deadline), kill any left, fail with their logs."""
  env = dict(os.environ)
  env.update(
    XLA_FLAGS="--xla_force_host_platform_device_count=4",
    JAX_PLATFORMS="cpu",
    PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""),
  )
  port = _free_port()
  script = os.path.join(ROOT, "tests", "multihost_worker.py")
  procs, logs = [], []
  timed_out = False
  try:
    for i in range(NUM_PROCESSES):
      log = os.path.join(out, f"worker_{i}.log")
      logs.append(log)
      with open(log, "w") as f:
        procs.append(
          subprocess.Popen(
            [sys.executable, script, str(i), str(NUM_PROCESSES), str(port), ckpt, out],
            env=env,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
          )
        )
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
      if time.monotonic() > deadline:
        timed_out = True
        break
      if any(p.returncode not in (None, 0) for p in procs):
        break  # one died: the other would wait for it until the deadline
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  codes = [p.returncode for p in procs]
  if codes != [0] * NUM_PROCESSES:
    report = "\n".join(
      f"--- process {i} (exit {c}) ---\n{_tail(log)}" for i, (c, log) in enumerate(zip(codes, logs, strict=False))
    )
    hung = f"timed out after {TIMEOUT_S} s; " if timed_out else ""
    pytest.fail(f"multi-host workers failed: {hung}exit codes {codes}\n{report}")


def test_two_process_mesh_matches_single_device(tmp_path):
  cfg = worker.config()
  tokens, mask = worker.batch(cfg)
  reference_model = models.from_config(cfg, seed=0)
  reference = np.asarray(models.logits(reference_model, tokens, mask))
  ckpt = tmp_path / "ckpt"
  models.save_pretrained(reference_model, str(ckpt))
  out = tmp_path / "out"
  out.mkdir()

  start = time.monotonic()
  _run_cluster(str(ckpt), str(out))
  print(f"\n2-process cluster ran in {time.monotonic() - start:.1f} s")

  for kind in ("built", "loaded", "local"):
    for i in range(NUM_PROCESSES):
      got = np.load(out / f"{kind}_{i}.npy")
      assert got.shape == reference.shape, (kind, i, got.shape)
      delta = float(np.max(np.abs(got - reference)))
      print(f"[{kind} process {i}] max|Δ| vs single device = {delta:.2e}")
      assert delta <= TOL, (kind, i, delta)

  # save_pretrained from a model sharded over both processes: one complete checkpoint.
  saved = models.load(str(out / "saved"), tokenizer=False)
  delta = float(np.max(np.abs(np.asarray(models.logits(saved, tokens, mask)) - reference)))
  print(f"[saved by the cluster, reloaded] max|Δ| = {delta:.2e}")
  assert delta == 0.0

  infos = [json.loads((out / f"info_{i}.json").read_text()) for i in range(NUM_PROCESSES)]
  # One global mesh of 8 devices, the same on both processes, 4 of them owned by each.
  assert infos[0]["mesh_devices"] == infos[1]["mesh_devices"]
  assert sorted(infos[0]["mesh_devices"]) == sorted(infos[0]["local_devices"] + infos[1]["local_devices"])
  for i, info in enumerate(infos):
    print(f"process {i}: {info}")
    assert info["process_index"] == i
    assert len(info["local_devices"]) == 4
    # Each process holds only its 4 devices' blocks of a sharded param and of the logits.
    assert info["q_spec"] == [None, "fsdp", "tensor", None]
    assert info["q_local_shards"] == [[cfg.num_layers, cfg.hidden_size // 2, cfg.num_heads // 2, cfg.head_dim]] * 4
    assert info["logits_spec"] == [["data", "fsdp"], None, "tensor"]
    assert info["logits_local_shards"] == [[8 // 4, tokens.shape[1], cfg.vocab_size // 2]] * 4
