"""`python -m grm_jax.serve` as two processes x 4 CPU devices (two hosts of a pod): process 0 serves HTTP and
broadcasts each sampler call, both run it sharded over the 8-device mesh; the answers equal one process's sampler;
SIGTERM to process 0 stops both."""

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from grm_jax import models, sampling
from tests.serve.conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_processes_serve_one_sharded_sampler(tmp_path):
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": ROOT}
  coordinator, port = free_port(), free_port()
  procs, logs = [], []
  for i in range(2):
    logs.append(open(tmp_path / f"serve_{i}.log", "w"))
    procs.append(subprocess.Popen(
      [sys.executable, "-m", "grm_jax.serve", "--model", "tiny:llama", "--port", str(port), "--max-new-tokens", "8",
       "--k", "2", "--coordinator_address", f"localhost:{coordinator}", "--num_processes", "2", "--process_id", str(i)],
      env=env, stdout=logs[i], stderr=subprocess.STDOUT, cwd=ROOT))
  url = f"http://127.0.0.1:{port}"

  def log(i):
    return (tmp_path / f"serve_{i}.log").read_text()[-3000:]

  try:
    deadline = time.monotonic() + 300
    while True:
      for i, p in enumerate(procs):
        assert p.poll() is None, log(i)
      try:
        if httpx.get(f"{url}/health", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      assert time.monotonic() < deadline, log(0) + log(1)
      time.sleep(0.5)
    model = models.load("tiny:llama")
    ids = model.encode_chat([{"role": "user", "content": "What is 2+2?"}])
    want = sampling.generate(model, [ids], n=2, max_new_tokens=8, temperature=0.0)
    got = httpx.post(f"{url}/v1/completions", json={"prompt": ids, "n": 2, "max_tokens": 8, "temperature": 0},
                     timeout=300).json()
    assert [c["tokens"] for c in got["choices"]] == want.tokens[0]
    sampled = {"prompt": ids, "n": 3, "max_tokens": 8, "temperature": 1.0, "seed": 7}
    got = httpx.post(f"{url}/v1/completions", json=sampled, timeout=300).json()
    want = sampling.generate(model, [ids], n=3, max_new_tokens=8, temperature=1.0, seed=[7])
    assert [c["tokens"] for c in got["choices"]] == want.tokens[0]
    rewards = httpx.post(f"{url}/v1/rewards", json={"prompt": "q", "responses": ["a", "b"]}, timeout=300)
    assert rewards.status_code == 200 and len(rewards.json()["rewards"]) == 2
    procs[0].send_signal(signal.SIGTERM)
    assert procs[0].wait(timeout=120) in (0, -signal.SIGTERM), log(0)
    assert procs[1].wait(timeout=120) == 0, log(1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for f in logs:
      f.close()
