"""The meta RM stage: BCE learns correctness from judgement text; the stage end to end on tiny:llama."""

import json
import os

import jax
import numpy as np
import pytest

from grm_jax import configs, models
from grm_jax.judges import meta_rm, scalar_rm
from grm_jax.models.scalar_head import init_head_params
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
  params = init_head_params(tiny_llama.params, tiny_llama.config.hidden_size)
  before = metarm.heldout_metrics(scalar_rm.score_sequences(tiny_llama, params, ho_seqs, 16), ho_labels)
  params, history = metarm.train(tiny_llama, params, train_seqs, train_labels, group, str(tmp_path), seed=0,
                                 progress=False)
  after = metarm.heldout_metrics(scalar_rm.score_sequences(tiny_llama, params, ho_seqs, 16), ho_labels)
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
  c.metarm.update(policy="base", batch_size=8, epochs=1, heldout_fraction=0.5, max_len=2048)
  c.metarm.sampling.update(k=1, max_new_tokens=16)
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


def test_top_tied_items_give_the_meta_rm_no_rows(tmp_path, monkeypatch):
  """An item whose best response is tied has no right judgement under Eq. 10, so its "wrong" labels would be wrong:
  RFT judgements of one (from a run before RFT left them out) are dropped and counted, and the policy never judges
  one."""
  from grm_jax.data.example import PreferenceExample
  from grm_jax.stages import common

  os.makedirs(tmp_path / "rft")
  tied_rows = [{**r, "id": f"t{i}", "n": 3, "responses": ["yes", "no", "yes!"], "rewards": [1.0, 0.0, 1.0],
                "perm": [0, 1, 2], "text": "Scores: \\boxed{8, 2, 8}", "correct": False}
               for i, r in enumerate(_rft_rows()[:2])]
  with open(tmp_path / "rft" / "judgements.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in _rft_rows() + tied_rows)
  config = _config()
  items = common.training_items(config, "train")
  tied_item = PreferenceExample(context=[{"role": "user", "content": "Q?"}], responses=["a", "b"],
                                rewards=[1.0, 1.0], source="hand", id="tied")
  monkeypatch.setattr(metarm.common, "training_items", lambda config, split="train": [*items, tied_item])
  judged, judge = [], metarm.judges.judge
  monkeypatch.setattr(metarm.judges, "judge",
                      lambda model, examples, *a, **k: judged.extend(ex.id for ex in examples) or judge(
                        model, examples, *a, **k))
  metarm.run(config, str(tmp_path))
  counts = json.loads((tmp_path / "metarm" / "metrics.json").read_text())["counts"]
  assert judged == [ex.id for ex in items]  # not the tied one
  assert counts["dropped_top_tied"] == 2 and counts["rows"] == 8 + 2 + len(items)
  assert counts["train"]["rows"] + counts["heldout"]["rows"] == 8 + len(items)


def test_probe_learns_heldout_correctness(tiny_llama):
  """The frozen decoder's states already carry the verdict; a logistic probe chosen by item-fold CV reads it."""
  train_seqs, train_labels = _judged_rows(tiny_llama, 64, seed=1)
  ho_seqs, ho_labels = _judged_rows(tiny_llama, 32, seed=2)
  group = configs.metarm()
  group.update(method="probe", batch_size=16, max_len=512)
  folds = np.arange(len(train_seqs)) % 4
  cut, params, choice = metarm.fit_probe(tiny_llama, train_seqs, train_labels, folds, group)
  assert 1 <= choice["depth"] <= tiny_llama.config.num_layers and cut.config.num_layers == choice["depth"]
  assert len(choice["table"]) == tiny_llama.config.num_layers * len(group.probe_l2)
  after = metarm.heldout_metrics(scalar_rm.score_sequences(cut, params, ho_seqs, 16), ho_labels)
  print(f"probe: depth {choice['depth']}, L2 {choice['l2']}, CV AUC {choice['cv_auc']:.3f}, held-out {after}")
  assert after["auc"] >= 0.8 and choice["cv_auc"] >= 0.7


def test_choose_probe_finds_the_informative_depth_by_item_folds():
  """Depth 2 of 3 carries the label; the others are noise. Samples of one item share a fold, so an item's copies
  cannot leak the label across folds (a per-row split would reward depth 3, which memorises items)."""
  rng = np.random.default_rng(0)
  items, per_item, h = 40, 4, 8
  item_label = rng.integers(0, 2, items).astype(bool)
  labels = np.repeat(item_label, per_item) ^ (rng.random(items * per_item) < 0.1)
  item_code = rng.normal(size=(items, h)) * 3.0  # depth 3: an item fingerprint, no label signal
  states = np.stack([
    rng.normal(size=(items * per_item, h)),
    np.where(labels[:, None], 1.0, -1.0) * np.eye(h)[0] + rng.normal(size=(items * per_item, h)),
    np.repeat(item_code, per_item, axis=0) + 0.01 * rng.normal(size=(items * per_item, h)),
  ], axis=1)
  folds = np.repeat(np.arange(items) % 5, per_item)
  choice = metarm.choose_probe(states, labels, folds, [1, 2, 3], [1.0, 0.01], balance=True)
  assert choice["depth"] == 2 and choice["cv_auc"] > 0.8 and choice["folds"] == 5
  by_depth = {d: max(r["cv_auc"] for r in choice["table"] if r["depth"] == d) for d in (1, 2, 3)}
  assert by_depth[1] < 0.7 and by_depth[3] < 0.7
  assert metarm.probe_depths("", 3) == [1, 2, 3] and metarm.probe_depths("3, 1", 3) == [1, 3]
  for bad in ("0", "4", "a"):
    with pytest.raises(ValueError, match="metarm.probe_layers"):
      metarm.probe_depths(bad, 3)


def test_stage_probe_end_to_end_loads_cut_model(tmp_path):
  """method=probe: the saved meta RM is the decoder cut to the chosen depth, and loading it scores the held-out rows
  as the stage measured."""
  os.makedirs(tmp_path / "rft")
  with open(tmp_path / "rft" / "judgements.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in _rft_rows())
  config = _config()
  # heldout_fraction 0.5 holds out r1, r2 and r3 of the RFT rows: both classes, so the AUC below is defined.
  config.metarm.update(method="probe", init="policy", probe_folds=2, heldout_fraction=0.5)
  info = metarm.run(config, str(tmp_path))
  out = tmp_path / "metarm"
  metrics = json.loads((out / "metrics.json").read_text())
  spec = json.loads((out / "model.json").read_text())
  assert metrics["method"] == info["method"] == "probe" and metrics["steps"] == 0
  assert spec["layers"] == metrics["probe"]["depth"] == metrics["layers"] == info["layers"]
  model, params = meta_rm.load_meta_rm(str(out))
  assert model.config.num_layers == spec["layers"]
  assert {leaf.shape[0] for leaf in jax.tree.leaves(params["decoder"]["layers"])} == {spec["layers"]}
  # The loaded meta RM scores the held-out rows of samples.jsonl; their AUC (pair counting, ties 1/2) and accuracy
  # (logit > 0), computed here, are what the stage wrote.
  rows = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
  held = [r for r in rows if metarm.item_heldout(r["source"], str(r["id"]), 0.5)]
  seqs = [meta_rm.meta_sequence(model, r["context"], r["responses"], r["text"], r["perm"], spec["max_len"])[0]
          for r in held]
  labels = np.array([bool(r["correct"]) for r in held])
  assert held and all(s is not None for s in seqs)
  logits = scalar_rm.score_sequences(model, params, seqs, 8, max_len=spec["max_len"])
  pos, neg = logits[labels], logits[~labels]
  after, before = metrics["after"], metrics["before"]
  print(f"held-out rows {len(held)} ({labels.sum()} right): logits {np.round(logits, 3).tolist()}; stage: {after}")
  assert after["rows"] == len(held) and after["positives"] == int(labels.sum())
  assert after["accuracy"] == pytest.approx(float(np.mean((logits > 0) == labels)), abs=1e-9)
  if len(pos) and len(neg):
    auc = float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))
    assert after["auc"] == pytest.approx(auc, abs=1e-6)
    assert before["auc"] == 0.5  # a zero head scores every row 0: all pairs tie
  else:  # one class held out: no AUC
    assert after["auc"] is None and before["auc"] is None


@pytest.mark.parametrize(("key", "value", "message"), [
  ("method", "lora", "config metarm.method='lora': choose one of"),
  ("policy", "sft", "config metarm.policy='sft': choose one of"),
  ("probe_folds", 1, "config metarm.probe_folds=1: cross-validation needs >= 2 folds"),
])
def test_bad_meta_rm_settings_are_refused_before_any_model_loads(key, value, message):
  config = _config()
  config.metarm.method = "probe"
  config.metarm[key] = value
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
    configs.validate(config, num_devices=1)


def test_probe_with_one_class_keeps_a_neutral_head(tiny_llama):
  seqs, _ = _judged_rows(tiny_llama, 6, seed=3)
  group = configs.metarm()
  group.update(method="probe", batch_size=8, max_len=512)
  cut, params, choice = metarm.fit_probe(tiny_llama, seqs, np.zeros(6, bool), np.arange(6) % 2, group)
  assert cut is tiny_llama and choice["table"] == [] and np.isnan(choice["cv_auc"])
  np.testing.assert_array_equal(scalar_rm.score_sequences(cut, params, seqs, 8), 0.0)
