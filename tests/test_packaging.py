"""Packaging and start-up: experiment files by name or path, the installed package run from another folder (slow
tier), and a CPU run that starts without libtpu's errors."""

import os
import re
import shutil
import site
import subprocess
import sys
import time

import pytest
from absl import flags

from grm_jax import configs, main, parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPCT = os.path.join(ROOT, "experiments", "spct.py")
# What libtpu and JAX print when the TPU backend is tried on a machine without a TPU.
E_LEVEL = re.compile(r"^E\d{4} |Unable to initialize backend", re.MULTILINE)


@pytest.mark.parametrize("spec", ["spct", "spct.py", "experiments/spct.py"])
def test_an_experiment_by_name_or_documented_path_from_any_folder(spec, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # no experiments/ here: the package's copy is found
  assert configs.resolve_experiment(f"{spec}:smoke") == f"{SPCT}:smoke"
  assert configs.resolve_experiment(spec) == SPCT


def test_a_path_that_exists_wins_over_the_installed_file(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "experiments").mkdir()
  (tmp_path / "experiments" / "spct.py").write_text("def get_config(arg=None):\n  return {'mine': arg}\n")
  assert configs.resolve_experiment("experiments/spct.py:x") == "experiments/spct.py:x"
  assert configs.load_experiment("experiments/spct.py").get_config("x") == {"mine": "x"}
  # Other folders and unknown names are left for the loader to report.
  assert configs.resolve_experiment("elsewhere/spct.py") == "elsewhere/spct.py"
  assert configs.resolve_experiment("nope:smoke") == "nope:smoke"


def test_an_unknown_name_lists_the_experiments():
  with pytest.raises(FileNotFoundError, match=r"no such file 'nope'.*'eval'.*'spct'"):
    configs.load_experiment("nope")
  assert {"spct", "eval", "baselines"} <= set(configs.experiment_names())


def test_the_config_flag_parses_a_bare_name_with_a_preset(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  parser = flags.FLAGS[main._CONFIG.name].parser  # the flag grm_jax.main defines, as absl parses --config=...
  by_name, by_path = parser.parse("eval:smoke"), parser.parse(os.path.join(ROOT, "experiments", "eval.py") + ":smoke")
  assert by_name.to_dict() == by_path.to_dict()
  assert by_name.eval.sampling.k == 2  # the smoke preset, not the default (the preset reached get_config)
  with pytest.raises(AttributeError):  # locked, as config_flags leaves it
    by_name.invented = 1


@pytest.fixture
def machine(monkeypatch, tmp_path):
  """A machine description for `should_pin_cpu`: /dev as a folder, no platform chosen, no GPU plugin."""
  dev = tmp_path / "dev"
  dev.mkdir()
  monkeypatch.setattr(parallel, "_jax_platforms", lambda: None)
  monkeypatch.setattr(parallel, "_other_pjrt_plugins", lambda: False)
  return dev


def test_cpu_is_pinned_only_where_no_tpu_and_no_other_accelerator(machine, monkeypatch):
  dev = str(machine)
  # Importing jax with libtpu installed sets these two itself: they say nothing about a TPU being there.
  assert parallel.should_pin_cpu({"TPU_LIBRARY_PATH": "/x/libtpu.so", "TPU_SKIP_MDS_QUERY": "1"}, dev)
  (machine / "vfio").mkdir()
  (machine / "vfio" / "vfio").write_text("")  # the vfio control file exists on many machines without a TPU
  assert parallel.should_pin_cpu({}, dev)
  assert not parallel.should_pin_cpu({"JAX_PLATFORMS": "tpu"}, dev), "the user's choice is kept"
  assert not parallel.should_pin_cpu({"TPU_WORKER_HOSTNAMES": "10.0.0.2,10.0.0.3"}, dev), "a GKE TPU pod"
  monkeypatch.setattr(parallel, "_other_pjrt_plugins", lambda: True)
  assert not parallel.should_pin_cpu({}, dev), "a GPU plugin (jax[cuda12]) decides for itself"


@pytest.mark.parametrize("device", ["accel0", "vfio/0"])
def test_a_tpu_device_file_means_a_tpu(machine, device):
  (machine / device).parent.mkdir(exist_ok=True)
  (machine / device).write_text("")
  assert parallel.tpu_attached({}, str(machine))
  assert not parallel.should_pin_cpu({}, str(machine))


def _clean_env(**extra) -> dict:
  """This environment without what the test session sets for itself (the test venv's own CPU pin, 8 fake devices,
  the worktree on PYTHONPATH): what a user's shell has."""
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS", "PYTHONPATH")}
  env.update(extra)
  return env


@pytest.mark.slow
def test_a_cpu_start_prints_no_tpu_errors():
  """The entry path's first step (`pin_cpu_without_tpu`) then JAX's backends, in a fresh process: in the test venv
  libtpu is installed (`make env`), so without the pin libtpu's E-level lines come first."""
  code = ("from grm_jax import parallel; pinned = parallel.pin_cpu_without_tpu(); import jax; "
          "print(pinned, jax.default_backend())")
  out = subprocess.run([sys.executable, "-c", code], env=_clean_env(PYTHONPATH=ROOT), capture_output=True, text=True,
                       timeout=120, check=True)
  assert not E_LEVEL.search(out.stderr), out.stderr
  assert out.stdout.split() == ["True", "cpu"]


@pytest.mark.slow
def test_a_plain_install_runs_the_smoke_preset_from_another_folder(tmp_path):
  """A non-editable `pip install` into a fresh venv (the dependencies are this venv's: no download), then
  `grm-jax --config=spct:smoke` from a folder with no experiments/ in it, to the end, with a clean start."""
  src = tmp_path / "src"  # pip builds in the source folder (build/, egg-info): a copy keeps the checkout clean
  shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                            ".pytest_cache", ".ruff_cache", "workdir*"))
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
  bin_dir = venv / "bin"
  (purelib,) = [p for p in (venv / "lib").glob("python3*/site-packages")]
  # This venv's packages after the new venv's own: a plain path, so its .pth files (the editable grm_jax) stay out.
  (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
  env = _clean_env()
  subprocess.run([bin_dir / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                  str(src)], env=env, check=True, capture_output=True, timeout=300)
  shutil.rmtree(src)  # nothing may still read the source
  run_dir = tmp_path / "elsewhere"
  run_dir.mkdir()
  where = subprocess.run([bin_dir / "python", "-c", "import grm_jax; print(grm_jax.__file__)"], cwd=run_dir, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
  assert where.startswith(str(purelib)), where
  start = time.perf_counter()
  out = subprocess.run([bin_dir / "grm-jax", "--config=spct:smoke", f"--workdir={tmp_path / 'run'}"], cwd=run_dir,
                       env=env, capture_output=True, text=True, timeout=900)
  seconds = time.perf_counter() - start
  assert out.returncode == 0, out.stderr[-4000:]
  assert not E_LEVEL.search(out.stderr[:4000]), out.stderr[:4000]
  for rel in ("config.json", "rft/stats.json", "eval/report.md"):
    assert (tmp_path / "run" / rel).exists(), rel
  print(f"grm-jax --config=spct:smoke from a plain install: {seconds:.0f} s")
