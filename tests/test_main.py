"""grm_jax.main: config errors name the key, file or preset; stages dispatch by name."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grm_jax import configs, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL = os.path.join(ROOT, "experiments", "eval.py")


def test_unknown_override_key_names_the_key_and_siblings():
  argv = ["prog", f"--config={EVAL}:smoke", "--workdir=/tmp/x", "--config.eval.sampling.kk=3"]
  msg = main._explain(argv, AttributeError("'kk'"))
  assert "unknown config key 'eval.sampling.kk'" in msg and "'k'" in msg and "max_new_tokens" in msg


def test_unknown_top_level_key():
  msg = main._explain(["p", f"--config={EVAL}", "--config.evl.k=3"], AttributeError("evl"))
  assert "'evl' is not under (top level)" in msg and "'eval'" in msg


def test_unknown_preset_and_missing_file():
  assert "unknown preset 'nope'" in main._explain(["p", f"--config={EVAL}:nope"], ValueError())
  assert "no such file" in main._explain(["p", "--config=experiments/none.py"], OSError())


def test_unknown_stage_fails_before_any_work(tmp_path):
  config = main._load_config_file(f"{EVAL}:smoke")
  config.stages = ("eval", "train_everything")
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
      seen["k"] = config.eval.sampling.k
      return {"ok": True}

  monkeypatch.setattr(main.importlib, "import_module", lambda name: Stage)
  config = main._load_config_file(f"{EVAL}:smoke")
  assert main.run(config, str(tmp_path)) == {"eval": {"ok": True}}
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


def _strict_json(text: str):
  def reject(constant):
    raise AssertionError(f"non-strict JSON constant {constant}")

  return json.loads(text, parse_constant=reject)


def test_a_diverging_stage_stops_with_an_error_and_writes_no_params(tmp_path):
  """RFT at learning rate 1e12: the first update blows the weights up, every later loss is NaN. The run must stop
  non-zero naming the stage, step and last checkpoint; no stage output is written; every checkpoint stays finite."""
  spct = os.path.join(ROOT, "experiments", "spct.py")
  proc = subprocess.run(
    [sys.executable, "-m", "grm_jax.main", f"--config={spct}:smoke", f"--workdir={tmp_path}",
     "--config.rft.optim.learning_rate=1e12", "--config.rft.epochs=10"],
    capture_output=True, text=True, cwd=ROOT, timeout=600,
    env={k: v for k, v in os.environ.items() if k != "XLA_FLAGS"},  # one device, as a user's CPU run
  )
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("grm_jax.main: rft/sft: step ") and "not finite in 3 steps in a row" in last, last
  assert "Last good checkpoint: step " in last and "Traceback" not in proc.stderr
  rft = tmp_path / "rft"
  assert not (rft / "final").exists() and not (rft / "done.json").exists()
  assert not (tmp_path / "grpo").exists()
  rows = [_strict_json(line) for line in (rft / "metrics.jsonl").read_text().splitlines()]
  assert rows[0]["skipped"] == 0.0 and [r["skipped"] for r in rows[-3:]] == [1.0, 1.0, 1.0]
  assert rows[-1]["loss"] is None  # NaN, written as strict JSON
  steps = sorted(int(p.name) for p in (rft / "checkpoints").iterdir() if p.name.isdigit())
  assert steps
  with ocp.StandardCheckpointer() as ckpt:
    for step in steps:
      state = ckpt.restore(rft / "checkpoints" / str(step) / "state")
      leaves = jax.tree.leaves(state["params"]) + jax.tree.leaves(state["opt_state"])
      assert leaves and all(np.isfinite(np.asarray(x)).all() for x in leaves), step


@pytest.mark.parametrize(("override", "message"), [
  ("--config.eval.sampling.k=0", "config eval.sampling.k=0: samples per item must be >= 1"),
  ("--config.eval.sampling.temperature=-0.5", "config eval.sampling.temperature=-0.5: must be >= 0"),
  ("--config.eval.sampling.top_p=0", "config eval.sampling.top_p=0.0: must be in (0, 1]"),
])
def test_a_bad_value_is_one_line_and_exit_2_before_any_model_loads(tmp_path, override, message):
  """User errors: one line naming the key, exit code 2, no traceback, nothing written (the model never loads)."""
  done = subprocess.run([sys.executable, "-m", "grm_jax.main", f"--config={EVAL}:smoke", f"--workdir={tmp_path}/w",
                         override], cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr[-2000:]
  assert "Traceback" not in done.stderr
  assert f"grm_jax.main: {message}" in done.stderr
  assert not (tmp_path / "w" / "config.json").exists()


def test_comma_separated_stages_on_the_command_line(tmp_path, monkeypatch):
  seen = []

  class Stage:
    @staticmethod
    def run(config, workdir):
      seen.append(tuple(config.stages))
      return {}

  monkeypatch.setattr(main.importlib, "import_module", lambda name: Stage)
  config = main._load_config_file(f"{EVAL}:smoke")
  config.stages = ("eval,eval",)
  assert list(main.run(config, str(tmp_path))) == ["eval"]  # one result per name, run twice
  assert seen == [("eval", "eval")] * 2


def test_comma_separated_variant_stages_pass_the_checks_before_the_run():
  """`--config.stages=seed1/rft,seed1_np/grpo` is one string until split: main splits it before its config checks,
  which look each variant up by name."""
  config = main._load_config_file(os.path.join(ROOT, "experiments", "science.py") + ":smoke")
  config.stages = ("seed1/rft, seed1_np/grpo", "claims")
  with pytest.raises(ValueError, match="no variant"):
    configs.validate(config, num_devices=1)
  config.stages = configs.stage_list(config.stages)
  assert config.stages == ("seed1/rft", "seed1_np/grpo", "claims")
  configs.validate(config, num_devices=1)
