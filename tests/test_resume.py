"""The main SPCT command killed with SIGKILL during GRPO and rerun: it resumes and completes, with the same GRPO
params and the same evaluation numbers as an uninterrupted run (tiny:llama, the smoke preset), and a finished run
is skipped stage by stage; the same with LoRA adapters, whose checkpoints hold the adapters only."""

import ast
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grm_jax.files import read_jsonl
from tests.xla_flags import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


def command(workdir, *extra):
  # The random tiny model's judgements never parse, so every rollout is rewarded -1, every group advantage is 0 and
  # the policy-gradient term has no gradient: at weight decay 0 GRPO would not move a single param and "resumed ==
  # uninterrupted" would hold for a run that does nothing. Decoupled weight decay moves the params at step 1, and from
  # step 2 on the KL term to the reference has a gradient through each step's own rollouts, which Adam (scale-free)
  # turns into lr-sized steps: the resumed run has to redo the same rollouts, moments and schedule to land on the
  # same params.
  return [sys.executable, "-m", "grm_jax.main", "--config=experiments/spct.py:smoke", f"--workdir={workdir}",
          f"--config.grpo.steps={STEPS}", "--config.grpo.optim.learning_rate=1e-3",
          "--config.grpo.optim.weight_decay=0.1", *extra]


def run_env(tmp_path):
  """One CPU device (the smoke batch is 4 rollouts), the suite's fast compiles, and one XLA compilation cache for
  the test's runs: the killed and the resumed run load the programs the first run compiled (the same executables, so
  the same numbers) instead of compiling them again, which is most of a tiny run's time."""
  return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": FAST_COMPILE,
          "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla"),
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.2"}


def final_params(workdir, stage="grpo"):
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(os.path.abspath(os.path.join(workdir, stage, "final")))


def max_abs_diff(a, b):
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b),
                                                                                strict=True))


@pytest.mark.slow  # the whole pipeline four times (~2.5 min): the LoRA test below keeps SIGKILL + resume in the default
@pytest.mark.timeout(600)
def test_spct_killed_during_grpo_resumes_to_the_same_results(tmp_path):
  env = run_env(tmp_path)
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  done = subprocess.run(command(whole), cwd=REPO, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]

  _kill_during_grpo(command(killed), killed, env)
  assert (killed / "rft" / "done.json").exists() and not (killed / "grpo" / "done.json").exists()
  rerun = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]

  a, b = final_params(whole), final_params(killed)
  worst = max_abs_diff(a, b)
  # GRPO starts from RFT's output (grpo.init="rft"): its 3 steps at lr 1e-3 must have moved the params (Adam moves a
  # param by up to ~lr per step; measured ~1e-3), far beyond the 1e-6 the resumed run may differ by, or "resumed ==
  # whole" proves nothing.
  start = final_params(whole, "rft")
  assert max_abs_diff(start, final_params(killed, "rft")) == 0.0  # both runs' GRPO started from the same params
  moved = max_abs_diff(a, start)
  print(f"resume: max |param difference| = {worst:.3g}; GRPO moved the params by up to {moved:.3g}")
  assert moved > 1e-4, f"GRPO did not update the params: max |final - start| = {moved:.3g}"
  assert max_abs_diff(b, start) > 1e-4
  assert worst <= 1e-6
  # The resumed run's metrics have one line per step, none duplicated.
  history = read_jsonl(killed / "grpo" / "metrics.jsonl")
  assert [r["step"] for r in history] == list(range(1, STEPS + 1))
  assert all(r["grad_norm"] > 0 for r in history[1:]), history  # the steps after the first had a gradient (KL)
  # Every rollout logged once, the redone steps' rollouts the same as the uninterrupted run's.
  rollouts = [read_jsonl(w / "grpo" / "rollouts.jsonl") for w in (whole, killed)]
  assert rollouts[0] == rollouts[1]
  assert sorted({r["step"] for r in rollouts[1]}) == list(range(1, STEPS + 1)) and len(rollouts[1]) == STEPS * 4
  whole_m = read_jsonl(whole / "grpo" / "metrics.jsonl")
  assert whole_m[0]["logp_diff_sampler_trainer"] <= 1e-4
  # The stages after GRPO ran on the resumed params: the same evaluation numbers as the uninterrupted run.
  results = [json.loads((w / "eval" / "results.json").read_text())["datasets"] for w in (whole, killed)]
  for d in (*results[0].values(), *results[1].values()):
    d.pop("throughput", None)  # wall-clock numbers
  assert results[0] == results[1]
  assert (killed / "metarm" / "done.json").exists() and (killed / "eval" / "report.md").exists()
  # A finished run is skipped stage by stage.
  again = subprocess.run(command(killed), cwd=REPO, env=env, capture_output=True, text=True)
  assert again.returncode == 0 and again.stderr.count("already done") >= 3, again.stderr[-3000:]


def _kill_during_grpo(cmd, workdir, env):
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  first = workdir / "grpo" / "checkpoints" / "1"
  deadline = time.time() + 300
  while not first.exists() and proc.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  assert first.exists(), "the run never wrote its first checkpoint"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()


@pytest.mark.timeout(600)
def test_a_lora_run_killed_during_grpo_resumes_to_the_same_adapters(tmp_path):
  """RFT and GRPO with rank-4 adapters: the stages' outputs and checkpoints hold the adapters only, GRPO moves them
  (its KL reference is the base model, which RFT's adapters already differ from), and a run killed mid-GRPO resumes
  to the uninterrupted run's adapters."""
  env = run_env(tmp_path)
  # Adapters train at a larger learning rate than full weights: at the smoke preset's RFT rate, B barely leaves zero
  # and the policy's KL to the base (GRPO's only gradient here) is ~1e-10, below Adam's epsilon.
  extra = ("--config.model.lora.rank=4", "--config.stages=rft,grpo", "--config.rft.optim.learning_rate=1e-2")
  whole, killed = tmp_path / "whole", tmp_path / "killed"
  done = subprocess.run(command(whole, *extra), cwd=REPO, env=env, capture_output=True, text=True)
  assert done.returncode == 0, done.stderr[-3000:]
  # The killed run starts from the whole run's RFT (its done marker's fingerprint holds, so RFT is reused, not rerun):
  # what is killed and resumed is GRPO, and both GRPO runs start from the same adapters by construction.
  shutil.copytree(whole / "rft", killed / "rft")
  _kill_during_grpo(command(killed, *extra), killed, env)
  rerun = subprocess.run(command(killed, *extra), cwd=REPO, env=env, capture_output=True, text=True)
  assert rerun.returncode == 0, rerun.stderr[-3000:]

  a, b, start = final_params(whole), final_params(killed), final_params(whole, "rft")
  for params in (a, b, start):
    names = {p[-1].key for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]}
    assert names and all(n.endswith(("_lora_a", "_lora_b")) for n in names), sorted(names)  # adapters only
  assert json.loads((whole / "grpo" / "final" / "trained.json").read_text())["lora"]["rank"] == 4
  # A checkpoint's state: the step, the adapters and their optimizer state; no base weight.
  saved = json.loads((killed / "grpo" / "checkpoints" / str(STEPS) / "state" / "_METADATA").read_text())
  paths = [ast.literal_eval(k) for k in saved["tree_metadata"]]  # orbax writes each key path as a tuple literal
  assert any(p[-1] == "q_lora_a" for p in paths) and all(
    p[-1].endswith(("_lora_a", "_lora_b")) for p in paths if p[0] == "params"), paths
  assert not any(p[-1] in ("embed", "q", "gate", "scale") for p in paths), paths
  moved, worst = max_abs_diff(a, start), max_abs_diff(a, b)
  print(f"lora resume: max |adapter difference| = {worst:.3g}; GRPO moved the adapters by up to {moved:.3g}")
  assert np.abs(np.asarray(start["layers"]["attn"]["q_lora_b"])).max() > 0  # RFT trained B away from zero
  assert moved > 1e-4 and max_abs_diff(b, start) > 1e-4
  assert worst <= 1e-6
