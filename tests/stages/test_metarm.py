"""The meta RM stage: BCE learns correctness from judgement text; the stage end to end on tiny:llama."""

import json
import os

import numpy as np
import pytest

from grm_jax import configs, models
from grm_jax.grm import meta_rm
from grm_jax.models.scalar_head import init_meta_params
from grm_jax.stages import metarm


@pytest.fixture(scope="module")
def tiny_llama():
  return models.load("tiny:llama")  # random weights, the real SmolLM2 tokenizer and chat template


def _judged_rows(model, count, seed):
  """Synthetic judgements: the true best is shown first; a judgement is right iff it favours Response 1.

  The verdict is restated in the critique, as real critiques do, so a 2-layer random model can pick it up in a few
  dozen steps; which response wins still has to be read from the text.
  """
  rng = np.random.default_rng(seed)
  seqs, labels = [], []
  for _ in range(count):
    a, b = (int(x) for x in rng.integers(10, 99, 2))
    hi, lo = int(rng.integers(7, 10)), int(rng.integers(1, 4))
    right = bool(rng.integers(2))
    s = (hi, lo) if right else (lo, hi)
    text = "Analysis: " + f"Response {1 if right else 2} is correct. " * 8 + f"\nScores: \\boxed{{{s[0]}, {s[1]}}}"
    ids, cut = meta_rm.meta_sequence(model, [{"role": "user", "content": f"What is {a} + {b}?"}],
                                    [str(a + b), str(a + b + 1)], text, [0, 1], 512)
    assert ids is not None and not cut
    seqs.append(ids)
    labels.append(right)
  return seqs, np.asarray(labels)


def test_bce_learns_heldout_correctness(tiny_llama, tmp_path):
  train_seqs, train_labels = _judged_rows(tiny_llama, 64, seed=1)
  ho_seqs, ho_labels = _judged_rows(tiny_llama, 32, seed=2)
  group = configs.metarm()
  group.update(batch_size=16, epochs=7, max_len=512)
  group.optim.update(learning_rate=1e-2, grad_clip=0.0, schedule="constant", warmup_steps=2)
  group.checkpoint.save_every = 1000
  params = init_meta_params(tiny_llama.params, tiny_llama.config.hidden_size)
  before = metarm.heldout_metrics(meta_rm.sequence_logits(tiny_llama, params, ho_seqs, 16), ho_labels)
  params, history = metarm.train(tiny_llama, params, train_seqs, train_labels, group, str(tmp_path), seed=0,
                                 progress=False)
  after = metarm.heldout_metrics(meta_rm.sequence_logits(tiny_llama, params, ho_seqs, 16), ho_labels)
  print(f"held-out AUC {before['auc']:.3f} -> {after['auc']:.3f}, accuracy {before['accuracy']:.3f} -> "
        f"{after['accuracy']:.3f}; loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")
  assert before["auc"] == pytest.approx(0.5)  # zero head: every logit 0
  assert after["auc"] >= 0.8 and after["accuracy"] >= 0.7
  assert history[-1]["loss"] < history[0]["loss"]


def test_item_split_is_stable_and_disjoint():
  ids = [f"q{i}" for i in range(400)]
  held = [metarm.item_heldout("src", i, 0.25) for i in ids]
  assert held == [metarm.item_heldout("src", i, 0.25) for i in ids]
  assert 0.15 < np.mean(held) < 0.35
  assert not any(metarm.item_heldout("src", i, 0.0) for i in ids)
  assert metarm.class_weights(np.array([1, 0, 0, 0], bool), True) == (pytest.approx(4 / 6), pytest.approx(2.0))
  assert metarm.class_weights(np.array([0, 0], bool), True) == (1.0, 1.0)


def _config():
  c = configs.base(("metarm",))
  c.model.name = "tiny:llama"
  c.data.train_limit = 2
  c.metarm = configs.metarm()
  c.metarm.update(policy="base", samples_per_item=1, max_new_tokens=16, batch_size=8, epochs=1, heldout_fraction=0.5,
                  max_len=2048)
  return c


def _rft_rows():
  rows = []
  for i in range(8):
    right = i % 2 == 0
    rows.append({"id": f"r{i}", "source": "hand", "n": 2, "context": [{"role": "user", "content": f"Q{i}?"}],
                 "responses": ["yes", "no"], "rewards": [1.0, 0.0], "perm": [1, 0] if i % 3 else [0, 1],
                 "text": f"Analysis: ok.\nScores: \\boxed{{{8 if right else 2}, 5}}", "valid": True, "correct": right,
                 "template": "default"})
  return rows


def test_stage_end_to_end_and_rerun_skips(tmp_path):
  os.makedirs(tmp_path / "rft")
  with open(tmp_path / "rft" / "judgements.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in _rft_rows())
  config = _config()
  info = metarm.run(config, str(tmp_path))
  out = tmp_path / "metarm"
  metrics = json.loads((out / "metrics.json").read_text())
  print("stage metrics:", json.dumps(metrics["counts"]), metrics["before"], metrics["after"])
  assert metrics["counts"]["origins"] == {"policy:base": 2, "rft": 8}
  assert metrics["counts"]["train"]["rows"] + metrics["counts"]["heldout"]["rows"] == 10
  assert metrics["steps"] == info["steps"] >= 1
  assert (out / "final").is_dir() and (out / "done.json").exists()
  assert len((out / "samples.jsonl").read_text().splitlines()) == 10
  assert json.loads((out / "model.json").read_text())["name"] == "tiny:llama"
  stamp = (out / "metrics.json").stat().st_mtime_ns
  assert metarm.run(config, str(tmp_path)) == json.loads((out / "done.json").read_text())
  assert (out / "metrics.json").stat().st_mtime_ns == stamp
  model, params = meta_rm.load_meta_rm(str(out))
  assert set(params) == {"decoder", "head"} and params["head"]["kernel"].shape == (model.config.hidden_size,)
