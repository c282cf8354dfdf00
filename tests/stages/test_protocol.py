"""The one stage protocol (`stages.common.run_stage`, `cached`): reuse when the inputs match, run again when the
config or an upstream stage's output changed, the done marker written last."""

import json

import ml_collections
import pytest

from grm_jax.stages import common


def _config(lr=1e-3):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.train = ml_collections.ConfigDict({"lr": lr})
  return c


def test_reuse_rerun_on_config_and_on_upstream_change(tmp_path):
  runs = []

  def work(name):
    def run(out):
      runs.append(name)
      return {"value": len(runs)}

    return run

  up = common.run_stage(_config(), str(tmp_path), "up", work("up"), keys=("seed", "train"))
  down = common.run_stage(_config(), str(tmp_path), "down", work("down"), keys=("seed",), upstream=("up",))
  assert runs == ["up", "down"] and up["value"] == 1 and down["value"] == 2
  assert json.loads((tmp_path / "down" / "done.json").read_text()) == down
  # Same inputs: nothing runs, the marker's info comes back.
  assert common.run_stage(_config(), str(tmp_path), "down", work("down"), keys=("seed",), upstream=("up",)) == down
  assert runs == ["up", "down"]
  # The upstream stage made again with another config: the downstream stage's inputs changed, it runs again.
  common.run_stage(_config(lr=2e-3), str(tmp_path), "up", work("up"), keys=("seed", "train"))
  common.run_stage(_config(), str(tmp_path), "down", work("down"), keys=("seed",), upstream=("up",))
  assert runs == ["up", "down", "up", "down"]


def test_a_failed_stage_leaves_no_marker(tmp_path):
  def work(out):
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError):
    common.run_stage(_config(), str(tmp_path), "s", work, keys=("seed",))
  assert not (tmp_path / "s" / "done.json").exists()


def test_cached_step(tmp_path):
  made = []

  def make():
    made.append(1)
    return {"rows": 3, "nan": float("nan")}

  marker = str(tmp_path / "samples.json")
  config = ml_collections.ConfigDict({"seed": 0, "rft": {"sampling": {"k": 1}, "steps": 5}})
  first = common.cached(marker, config, make, keys=("seed", "rft.sampling"))
  # The same digest a stage's done marker holds for the same inputs; NaN stored as null (strict JSON).
  assert first == {"rows": 3, "nan": None, "fingerprint": common.fingerprint(config, "seed", "rft.sampling")}
  assert common.cached(marker, config, make, keys=("seed", "rft.sampling")) == first and len(made) == 1
  config.rft.steps = 6  # not among the step's inputs: reused
  assert common.cached(marker, config, make, keys=("seed", "rft.sampling")) == first and len(made) == 1
  config.rft.sampling.k = 2  # one of them: made again
  common.cached(marker, config, make, keys=("seed", "rft.sampling"))
  assert len(made) == 2


def test_checkpoints_of_other_inputs_are_not_resumed(tmp_path):
  """A killed run resumes its checkpoints; a run with another config starts over (a changed learning rate must not
  restore the old run's state), while a sampling step's cache stays (it has its own fingerprint)."""
  seen = []

  def killed(out):
    (tmp_path / "s" / "checkpoints" / "3").mkdir(parents=True)
    (tmp_path / "s" / "metrics.jsonl").write_text('{"step": 1}\n')
    (tmp_path / "s" / "samples.json").write_text("{}")
    raise RuntimeError("killed")

  def work(out):
    seen.append(sorted(p.name for p in (tmp_path / "s").iterdir()))
    return {}

  with pytest.raises(RuntimeError):
    common.run_stage(_config(), str(tmp_path), "s", killed, keys=("seed", "train"))
  common.run_stage(_config(), str(tmp_path), "s", work, keys=("seed", "train"))  # same inputs: resume
  assert seen[-1] == ["checkpoints", "metrics.jsonl", "samples.json", "started.json"]
  common.run_stage(_config(lr=2e-3), str(tmp_path), "s", work, keys=("seed", "train"))  # other inputs: start over
  assert seen[-1] == ["samples.json", "started.json"]


def test_log_only_keys_do_not_change_the_fingerprint():
  """The held-out probe's schedule adds log lines only: changing it keeps a finished stage; a training key does not."""
  c = _config()
  before = common.fingerprint(c, "seed", "train")
  c.train.eval_every, c.train.eval_items = 5, 16
  assert common.fingerprint(c, "seed", "train") == before
  c.train.lr = 2e-3
  assert common.fingerprint(c, "seed", "train") != before


def test_stage_seconds_are_what_made_the_outputs_not_a_later_reuse(tmp_path):
  """A stage's done marker records its own run time; a later invocation that reuses it logs ~0 s to timings.jsonl,
  which must not replace that cost in a report."""
  info = common.run_stage(_config(), str(tmp_path), "up", lambda out: {"value": 1}, keys=("seed", "train"))
  assert info["seconds"] >= 0.0 and info["value"] == 1
  (tmp_path / "timings.jsonl").write_text(
    json.dumps({"stage": "up", "seconds": 7.0}) + "\n" + json.dumps({"stage": "up", "seconds": 0.0}) + "\n"
    + json.dumps({"stage": "old", "seconds": 5.0}) + "\n" + json.dumps({"stage": "old", "seconds": 0.1}) + "\n")
  seconds = common.stage_seconds(str(tmp_path))
  assert seconds == {"up": info["seconds"], "old": 5.0}  # "old" has no marker: its longest line
