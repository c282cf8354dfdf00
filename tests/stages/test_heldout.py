"""Held-out evaluation during training: `eval_every` adds "heldout/accuracy" and "heldout/parse_rate" to the steps
it names, in RFT's and GRPO's metrics, from items training never sees; bad settings fail before any model loads."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grm_jax import configs, judges, main, parallel
from grm_jax.files import read_jsonl
from grm_jax.stages import common
from tests.stages.test_eval import scripted_judge

SPCT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "experiments",
                    "spct.py")


def _final_params(path):
  with ocp.StandardCheckpointer() as ckpt:
    return ckpt.restore(os.path.abspath(path))


def test_rft_and_grpo_log_heldout_metrics_on_their_schedule(tmp_path, monkeypatch):
  """The held-out judging is scripted (the tiny random model parses nothing, which would make every number 0 and no
  bug visible): its verdicts on the 3 held-out items are a tie, an unparseable text and a right one (tests/stages/
  test_eval.py's `scripted_judge` at k=1), so each logged step must read accuracy 1/3 and parse rate 2/3; the items
  judged are data.test's first 3, none of them a training item, judged greedily once, with the params of the step
  that logs them (the last check's are the stage's final params). Every other judge call (GRPO's rollouts) is the
  real one."""
  config = configs.load_experiment(SPCT).get_config("smoke")
  config.stages = ("rft", "grpo")
  config.rft.eval_every, config.rft.eval_items = 1, 3
  config.grpo.eval_every, config.grpo.eval_items = 2, 3
  monkeypatch.setattr(common, "mesh_scope", lambda c: parallel.use_mesh(None))  # one device
  batch_shards = configs._batch_shards  # ... and validated against that one device's real mesh
  monkeypatch.setattr(configs, "_batch_shards", lambda c, num_devices: batch_shards(c, 1))
  heldout = [(ex.source, ex.id) for ex in common.training_items(config, "test")[:3]]
  train = {(ex.source, ex.id) for ex in common.training_items(config, "train")}
  assert len(heldout) == 3 and not set(heldout) & train
  real_judge, scripted, checks = judges.judge, scripted_judge([]), []

  def judge(model, examples, sampling, **kwargs):
    if [(ex.source, ex.id) for ex in examples] != heldout:
      return real_judge(model, examples, sampling, **kwargs)
    checks.append({"params": jax.tree.map(np.asarray, model.params), "k": sampling.k,
                   "temperature": sampling.temperature})
    return scripted(model, examples, sampling, **kwargs)

  monkeypatch.setattr(judges, "judge", judge)
  main.run(config, str(tmp_path))
  rft = read_jsonl(tmp_path / "rft" / "metrics.jsonl")
  grpo = read_jsonl(tmp_path / "grpo" / "metrics.jsonl")
  assert [("heldout/accuracy" in r) for r in grpo] == [False, True]  # every 2nd of 2 steps
  logged = [r for r in rft if "heldout/accuracy" in r] + [r for r in grpo if "heldout/accuracy" in r]
  assert rft and len(logged) == len(rft) + 1 == len(checks)  # every RFT step, GRPO's 2nd: one judge call each
  for r in logged:
    assert r["heldout/accuracy"] == pytest.approx(1 / 3) and r["heldout/parse_rate"] == pytest.approx(2 / 3), r
  assert all(c["k"] == 1 and c["temperature"] == 0.0 for c in checks)
  for check, stage in ((checks[len(rft) - 1], "rft"), (checks[-1], "grpo")):
    final = _final_params(tmp_path / stage / "final")
    for a, b in zip(jax.tree.leaves(check["params"]), jax.tree.leaves(final), strict=True):
      np.testing.assert_array_equal(a, np.asarray(b), err_msg=f"{stage}: the last check judged other params")
  # The checks followed the training: RFT's first check and GRPO's saw different params.
  assert any(np.any(a != b) for a, b in zip(jax.tree.leaves(checks[0]["params"]), jax.tree.leaves(checks[-1]["params"]),
                                            strict=True))


def test_bad_probe_settings_name_the_key():
  config = configs.load_experiment(SPCT).get_config("smoke")
  config.grpo.eval_every = -1
  with pytest.raises(ValueError, match="config grpo.eval_every=-1: must be >= 0"):
    configs.validate(config, num_devices=1)
