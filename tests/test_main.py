"""grm_jax.main: config errors name the key, file or preset; stages dispatch by name."""

import os
import subprocess
import sys

import pytest

from grm_jax import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(ROOT, "experiments", "eval.py")


def test_unknown_override_key_names_the_key_and_siblings():
  argv = ["prog", f"--config={EVAL}:smoke", "--workdir=/tmp/x", "--config.eval.kk=3"]
  msg = main._explain(argv, AttributeError("'kk'"))
  assert "unknown config key 'eval.kk'" in msg and "'k'" in msg and "max_new_tokens" in msg


def test_unknown_top_level_key():
  msg = main._explain(["p", f"--config={EVAL}", "--config.evl.k=3"], AttributeError("evl"))
  assert "'evl' is not under (top level)" in msg and "'eval'" in msg


def test_unknown_preset_and_missing_file():
  assert "unknown preset 'nope'" in main._explain(["p", f"--config={EVAL}:nope"], ValueError())
  assert "no such file" in main._explain(["p", "--config=experiments/none.py"], OSError())


def test_unknown_stage_fails_before_any_work(tmp_path):
  config = main._load_config_file(f"{EVAL}:smoke")
  config.stages = ("evaluate", "train_everything")
  with pytest.raises(ValueError, match="config.stages: unknown stage 'train_everything'"):
    main.run(config, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_config_is_locked_for_stages(tmp_path, monkeypatch):
  seen = {}

  class Stage:
    @staticmethod
    def run(config, workdir):
      with pytest.raises(AttributeError):
        config.eval.invented_key = 1
      seen["k"] = config.eval.k
      return {"ok": True}

  monkeypatch.setattr(main.importlib, "import_module", lambda name: Stage)
  config = main._load_config_file(f"{EVAL}:smoke")
  assert main.run(config, str(tmp_path)) == {"evaluate": {"ok": True}}
  assert seen["k"] == 2
  assert os.path.exists(tmp_path / "config.json")


def test_cli_exit_code_and_message(tmp_path):
  proc = subprocess.run(
    [sys.executable, "-m", "grm_jax.main", f"--config={EVAL}:smoke", f"--workdir={tmp_path}", "--config.eval.kk=3"],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=120,
  )
  assert proc.returncode == 2
  assert "unknown config key 'eval.kk'" in proc.stderr
