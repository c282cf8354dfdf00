"""The GRPO stage end to end on tiny:llama: metrics, agreement at step 0, and exact resume after SIGKILL."""

import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grm_jax.train.metrics import read_jsonl

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 3


def command(workdir):
  return [sys.executable, "-m", "grm_jax.main", "--config=experiments/grpo.py:smoke", f"--workdir={workdir}",
          f"--config.grpo.steps={STEPS}", "--config.grpo.optim.learning_rate=1e-3"]


def final_params(workdir):
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(os.path.abspath(os.path.join(workdir, "grpo", "final")))


@pytest.mark.timeout(600)
def test_grpo_killed_with_sigkill_resumes_to_the_same_params(tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}  # one device: the smoke batch is 4 rollouts
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  subprocess.run(command(whole), cwd=REPO, env=env, check=True, capture_output=True)

  proc = subprocess.Popen(command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = killed / "grpo" / "checkpoints" / "1"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert first.exists(), "the run never wrote its first checkpoint"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert not (killed / "grpo" / "done.json").exists()
  rerun = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]

  a, b = final_params(whole), final_params(killed)
  worst = max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a),
                                                                                jax.tree.leaves(b), strict=True))
  moved = max(float(np.abs(np.asarray(x)).max()) for x in jax.tree.leaves(a))
  print(f"resume: max |param difference| = {worst:.3g}")
  assert worst <= 1e-6
  assert moved > 0
  # The resumed run's metrics have one line per step, none duplicated.
  steps = [r["step"] for r in read_jsonl(killed / "grpo" / "metrics.jsonl")]
  assert steps == list(range(1, STEPS + 1))
  whole_m = read_jsonl(whole / "grpo" / "metrics.jsonl")
  assert whole_m[0]["logp_diff_sampler_trainer"] <= 1e-4
  # A finished stage is skipped on a rerun.
  again = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
  assert again.returncode == 0 and "already done" in again.stderr
