"""W&B tracking: one run per job, each stage's scalars under its path with its own step axis; offline for real."""

import glob
import os
import sys
import time
import types

import pytest

from grm_jax import configs
from grm_jax.train import tracking
from grm_jax.train.metrics import MetricsWriter
from tests.test_files import bucket  # noqa: F401  (the fake gs:// bucket fixture)


class _FakeRun:
  def __init__(self, **kwargs):
    self.init, self.defined, self.logged, self.finished = kwargs, [], [], False

  def define_metric(self, name, step_metric=None):
    self.defined.append((name, step_metric))

  def log(self, data):
    self.logged.append(data)

  def finish(self):
    self.finished = True


def test_each_stage_logs_under_its_path_with_its_own_step(tmp_path, monkeypatch):
  runs = []
  fake = types.SimpleNamespace(init=lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1])
  monkeypatch.setitem(sys.modules, "wandb", fake)
  settings = configs.tracking()
  assert tracking.start(settings, str(tmp_path), {"seed": 0}) is None  # off by default
  settings.wandb, settings.wandb_mode = True, "offline"
  run = tracking.start(settings, str(tmp_path), {"seed": 0})
  assert run.init["id"] == tracking.run_id(str(tmp_path)) == tracking.run_id(str(tmp_path) + "/")
  assert run.init["mode"] == "offline" and run.init["resume"] == "allow" and run.init["config"] == {"seed": 0}
  with MetricsWriter(str(tmp_path / "seed0" / "rft" / "metrics.jsonl")) as w:
    w.write(1, {"loss": 2.5, "grad_norm": float("nan")})
    w.write(2, {"loss": 1.5})
  with MetricsWriter(str(tmp_path / "grpo" / "metrics.jsonl")) as w:
    w.write(1, {"reward_mean": 0.25})
  tracking.finish()
  assert run.logged == [{"seed0/rft/step": 1, "seed0/rft/loss": 2.5}, {"seed0/rft/step": 2, "seed0/rft/loss": 1.5},
                        {"grpo/step": 1, "grpo/reward_mean": 0.25}]
  assert run.defined == [("seed0/rft/step", None), ("seed0/rft/*", "seed0/rft/step"), ("grpo/step", None),
                         ("grpo/*", "grpo/step")]
  assert run.finished
  with MetricsWriter(str(tmp_path / "rft" / "metrics.jsonl")) as w:  # no run: the JSONL alone
    w.write(1, {"loss": 1.0})
  assert len(run.logged) == 3


def test_an_offline_wandb_run_records_the_metrics(tmp_path):
  pytest.importorskip("wandb")
  settings = configs.tracking()
  settings.wandb, settings.wandb_mode = True, "offline"
  tracking.start(settings, str(tmp_path), {"seed": 0})
  try:
    with MetricsWriter(str(tmp_path / "rft" / "metrics.jsonl")) as w:
      for step in range(1, 4):
        w.write(step, {"loss": 1.0 / step})
  finally:
    tracking.finish()
  rid = tracking.run_id(str(tmp_path))
  pattern = str(tmp_path / "wandb" / f"offline-run-*-{rid}" / f"run-{rid}.wandb")
  # wandb's service process writes the record after `finish` returns; on a loaded machine it can lag a few seconds.
  data, deadline = b"", time.monotonic() + 30
  while time.monotonic() < deadline:
    records = glob.glob(pattern)
    assert len(records) <= 1, records
    data = open(records[0], "rb").read() if records else b""
    if b"rft/loss" in data and b"rft/step" in data and b"0.3333" in data:
      break
    time.sleep(0.2)
  assert b"rft/loss" in data and b"rft/step" in data and b"0.3333" in data, (pattern, len(data))


def test_bad_wandb_settings_are_one_line_before_any_model_loads(monkeypatch):
  c = configs.base(("rft",))
  c.logging.wandb, c.logging.wandb_mode = True, "cloud"
  with pytest.raises(ValueError, match=r"config logging.wandb_mode='cloud': choose one of \('online', 'offline'\)"):
    configs.validate(c, num_devices=1)
  c.logging.wandb_mode = "offline"
  monkeypatch.setattr(configs.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ValueError, match="config logging.wandb=True needs the wandb package: pip install wandb"):
    configs.validate(c, num_devices=1)


def test_a_gs_workdir_keeps_wandb_files_in_a_local_cache_named_by_the_run(bucket, tmp_path, monkeypatch):  # noqa: F811
  """wandb writes its files with plain `open`: for a gs:// workdir they go to a local cache folder named by the run id
  (not `<cwd>/gs:/…`), the run is named after the workdir's last folder, and stages log under their path in it."""
  runs = []
  fake = types.SimpleNamespace(init=lambda **kw: runs.append(_FakeRun(**kw)) or runs[-1])
  monkeypatch.setitem(sys.modules, "wandb", fake)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  monkeypatch.chdir(tmp_path)
  workdir = f"{bucket}/runs/spct-1"
  settings = configs.tracking()
  settings.wandb = True
  run = tracking.start(settings, workdir, {})
  try:
    rid = tracking.run_id(workdir)
    assert rid == tracking.run_id(workdir + "/") != tracking.run_id(f"{bucket}/runs/spct-2")
    assert run.init["dir"] == str(tmp_path / "cache" / "grm_jax" / "wandb" / rid) and os.path.isdir(run.init["dir"])
    assert run.init["name"] == "spct-1" and run.init["id"] == rid
    with MetricsWriter(f"{workdir}/seed0/rft/metrics.jsonl") as w:
      w.write(1, {"loss": 2.5})
  finally:
    tracking.finish()
  assert run.logged == [{"seed0/rft/step": 1, "seed0/rft/loss": 2.5}]
  assert not (tmp_path / "gs:").exists()
