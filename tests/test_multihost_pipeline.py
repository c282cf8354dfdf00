"""The whole pipeline as 2 processes x 4 CPU devices on one workdir, like two hosts of a pod.

`spct.py:smoke` (all four stages) runs once as one process with 8 devices (the reference) and once as a 2-process
cluster (JAX's distributed runtime on localhost, gloo collectives) that is SIGKILLed in the middle of GRPO and
started again with the same command. The cluster must resume, finish, and produce the reference's evaluation
results; process 1 must write no file itself (tests/pipeline_worker.py records every Python-level write; orbax's
own per-process checkpoint metadata is the one exception, orbax coordinates its processes itself).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.test_multihost import _free_port, _tail

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 600
# The smoke preset on a (data 1, fsdp 2, tensor 4) mesh of 8 devices; 4 GRPO steps (a checkpoint after each) leave
# time to kill the cluster after the first one.
FLAGS = ["--config=experiments/spct.py:smoke", "--config.mesh.fsdp=2", "--config.mesh.tensor=4",
         "--config.grpo.steps=4"]
TIMING_KEYS = {"seconds", "sampler_seconds", "total_seconds", "items_per_s", "tokens_per_s"}


def _env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=ROOT + os.pathsep + env.get("PYTHONPATH", ""))
  return env


def _without_timings(x):
  if isinstance(x, dict):
    return {k: _without_timings(v) for k, v in x.items() if k not in TIMING_KEYS}
  if isinstance(x, list):
    return [_without_timings(v) for v in x]
  return x


def _start_cluster(workdir, out, tag: str) -> tuple[list[subprocess.Popen], list[str]]:
  port = _free_port()
  procs, logs = [], []
  for i in range(2):
    log = os.path.join(out, f"{tag}_{i}.log")
    logs.append(log)
    writes = os.path.join(out, f"{tag}_writes_{i}.jsonl")
    cmd = [sys.executable, os.path.join(ROOT, "tests", "pipeline_worker.py"), writes, str(workdir), "--", *FLAGS,
           f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={i}"]
    with open(log, "w") as f:
      procs.append(subprocess.Popen(cmd, env=_env(4), cwd=ROOT, stdout=f, stderr=subprocess.STDOUT))
  return procs, logs


def _wait(procs, logs, until=None) -> bool:
  """Waits for both processes to exit (True) or for `until()` to hold (False: they are still running)."""
  deadline = time.monotonic() + TIMEOUT_S
  while any(p.poll() is None for p in procs):
    if until is not None and until():
      return False
    if time.monotonic() > deadline or any(p.returncode not in (None, 0) for p in procs):
      break
    time.sleep(0.2)
  for p in procs:
    if p.poll() is None:
      p.kill()
    p.wait()
  codes = [p.returncode for p in procs]
  if codes != [0, 0]:
    report = "\n".join(f"--- process {i} (exit {c}) ---\n{_tail(log)}" for i, (c, log) in enumerate(zip(codes, logs,
                                                                                                         strict=True)))
    pytest.fail(f"cluster failed: exit codes {codes}\n{report}")
  return True


def _grpo_checkpoints(workdir) -> list[int]:
  """GRPO's finalized checkpoint steps (orbax renames a step's folder to its number once every process wrote it)."""
  path = os.path.join(workdir, "grpo", "checkpoints")
  return sorted(int(n) for n in os.listdir(path) if n.isdigit()) if os.path.isdir(path) else []


def _foreign_writes(path: str) -> list:
  """Writes other than orbax's own per-process checkpoint metadata (inside its *.orbax-checkpoint-tmp folders)."""
  with open(path) as f:
    writes = [json.loads(line) for line in f]
  return [w for w in writes if not all(".orbax-checkpoint-tmp" in p for p in w[1:])]


# Slow tier (~3 min alone): the default suite keeps the two-process mesh test (tests/test_multihost.py).
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_process_pipeline_resumes_after_sigkill_and_matches_one_process(tmp_path):
  reference = tmp_path / "reference"
  subprocess.run([sys.executable, "-m", "grm_jax.main", *FLAGS, f"--workdir={reference}"], env=_env(8), cwd=ROOT,
                 check=True, capture_output=True, timeout=TIMEOUT_S)

  workdir, out = tmp_path / "cluster", tmp_path / "logs"
  out.mkdir()
  procs, logs = _start_cluster(workdir, out, "first")
  finished = _wait(procs, logs, until=lambda: bool(_grpo_checkpoints(workdir)))
  assert not finished, "the cluster finished before GRPO's first checkpoint was seen; nothing was interrupted"
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert os.path.exists(workdir / "rft" / "done.json") and not os.path.exists(workdir / "grpo" / "done.json")
  saved = _grpo_checkpoints(workdir)
  print(f"\nkilled both processes in GRPO with checkpoints {saved}")

  procs, logs = _start_cluster(workdir, out, "second")
  assert _wait(procs, logs)
  second = open(logs[0]).read()
  assert "rft: already done" in second and f"grpo: resumed from step {saved[-1]}" in second, _tail(logs[0])
  with open(workdir / "grpo" / "metrics.jsonl") as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2, 3, 4]

  got = json.loads((workdir / "eval" / "results.json").read_text())
  want = json.loads((reference / "eval" / "results.json").read_text())
  assert _without_timings(got) == _without_timings(want)
  assert got["devices"] == want["devices"] == "8 x cpu"

  for tag in ("first", "second"):
    assert _foreign_writes(str(out / f"{tag}_writes_0.jsonl")), "process 0's writes were not recorded"
    assert _foreign_writes(str(out / f"{tag}_writes_1.jsonl")) == [], f"process 1 wrote files ({tag} run)"
