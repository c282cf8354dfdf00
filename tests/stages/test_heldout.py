"""Held-out evaluation during training: `eval_every` adds "heldout/accuracy" and "heldout/parse_rate" to the steps
it names, in RFT's and GRPO's metrics, from items training never sees; bad settings fail before any model loads."""

import os

import pytest

from grm_jax import configs, main, parallel
from grm_jax.files import read_jsonl
from grm_jax.stages import common

SPCT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "experiments",
                    "spct.py")


def test_rft_and_grpo_log_heldout_metrics_on_their_schedule(tmp_path, monkeypatch):
  config = configs.load_experiment(SPCT).get_config("smoke")
  config.stages = ("rft", "grpo")
  config.rft.eval_every, config.rft.eval_items = 1, 2
  config.grpo.eval_every, config.grpo.eval_items = 2, 2
  monkeypatch.setattr(common, "mesh_scope", lambda c: parallel.use_mesh(None))  # one device
  monkeypatch.setattr(configs, "_batch_shards", lambda c, num_devices: 1)
  main.run(config, str(tmp_path))
  rft = read_jsonl(tmp_path / "rft" / "metrics.jsonl")
  grpo = read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
  assert rft and all(0.0 <= r["heldout/accuracy"] <= 1.0 and 0.0 <= r["heldout/parse_rate"] <= 1.0 for r in rft)
  assert [("heldout/accuracy" in r) for r in grpo] == [False, True]  # every 2nd of 2 steps


def test_bad_probe_settings_name_the_key():
  config = configs.load_experiment(SPCT).get_config("smoke")
  config.grpo.eval_every = -1
  with pytest.raises(ValueError, match="config grpo.eval_every=-1: must be >= 0"):
    configs.validate(config, num_devices=1)
