"""The Bradley–Terry scalar RM baseline: it learns a toy preference, and the stage end to end on tiny:llama (single
responses dropped and counted, the eval items scored by the eval stage's metrics, a rerun reuses the results)."""

import importlib.util
import json
import os

import numpy as np
import pytest

from grm_jax import configs, models
from grm_jax.data.example import PreferenceExample
from grm_jax.models.scalar_head import init_head_params
from grm_jax.stages import btrm, common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def tiny_llama():
  return models.load("tiny:llama")  # random weights, the real SmolLM2 tokenizer and chat template


def _toy_items(count, seed):
  """Items of 2-4 responses whose reward is how many times "good" (vs "bad") they say: pairs and ranked lists, some
  with tied rewards, so the loss sees every shape it is built for."""
  rng = np.random.default_rng(seed)
  out = []
  for i in range(count):
    n = int(rng.choice([2, 2, 3, 4]))
    goods = rng.choice(4, size=n, replace=n > 3 and bool(rng.integers(2)))
    if len(set(goods.tolist())) < 2:
      goods[0] = (goods[1] + 1) % 4
    responses = [" ".join(rng.permutation(["good"] * int(g) + ["bad"] * (3 - int(g))).tolist()) for g in goods]
    out.append(PreferenceExample(context=[{"role": "user", "content": f"Say something {i}."}],
                                 responses=responses, rewards=[float(g) for g in goods], source="toy", id=str(i)))
  return out


def test_bradley_terry_learns_a_toy_preference(tiny_llama, tmp_path):
  train_items, test_items = _toy_items(48, seed=1), _toy_items(24, seed=2)
  assert {ex.n for ex in train_items} == {2, 3, 4}
  train_seqs, _ = btrm.item_sequences(tiny_llama, train_items, 256)
  test_seqs, _ = btrm.item_sequences(tiny_llama, test_items, 256)
  group = configs.btrm()
  group.update(batch_size=8, epochs=4, max_len=256)
  group.optim.update(learning_rate=3e-3, grad_clip=0.0, schedule="constant", warmup_steps=2)
  group.checkpoint.save_every = 1000
  params = init_head_params(tiny_llama.params, tiny_llama.config.hidden_size)
  before = btrm.pair_metrics(btrm.score_items(tiny_llama, params, test_seqs, 32, 256), test_items)
  params, history = btrm.train(tiny_llama, params, train_seqs, train_items, group, str(tmp_path), seed=0,
                               progress=False)
  after = btrm.pair_metrics(btrm.score_items(tiny_llama, params, test_seqs, 32, 256), test_items)
  print(f"held-out pairs {after['pairs']}: accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, loss "
        f"{before['loss']:.3f} -> {after['loss']:.3f}; train loss {history[0]['loss']:.3f} -> "
        f"{history[-1]['loss']:.3f}")
  assert before["ties"] == 1.0 and before["loss"] == pytest.approx(np.log(2))  # the zero head ties every pair
  assert history[0]["loss"] == pytest.approx(np.log(2), abs=1e-6)
  assert after["accuracy"] >= 0.8 and after["loss"] < before["loss"]
  assert history[-1]["loss"] < history[0]["loss"]
  assert "accuracy" in history[-1] and history[0]["loss/weight"] > 8  # pairs per step: lists count all their pairs


def test_trainable_drops_single_and_tied_items():
  ctx = [{"role": "user", "content": "q"}]
  items = [PreferenceExample(context=ctx, responses=["a"], rewards=[1.0]),
           PreferenceExample(context=ctx, responses=["a", "b"], rewards=[1.0, 0.0]),
           PreferenceExample(context=ctx, responses=["a", "b", "c"], rewards=[1.0, 1.0, 1.0]),
           PreferenceExample(context=ctx, responses=["a", "b", "c"], rewards=[2.0, 1.0, 1.0]),
           # pairs to learn from, but two best responses: the GRM's training stages have no Eq. 10 label for it
           PreferenceExample(context=ctx, responses=["a", "b", "c", "d"], rewards=[2.0, 0.0, 2.0, 1.0])]
  kept, counts = btrm.trainable(items)
  assert [ex.n for ex in kept] == [2, 3]
  assert counts == {"items": 5, "kept": 2, "dropped_filter": 0, "dropped_single": 1, "dropped_no_pair": 1,
                    "dropped_top_tied": 1}
  # The RL-data filter's drops (by source and id) go first, whatever else the item is.
  items = [PreferenceExample(context=ctx, responses=["a", "b"], rewards=[1.0, 0.0], source="s", id=str(i))
           for i in range(3)] + [PreferenceExample(context=ctx, responses=["a"], rewards=[1.0], source="s", id="3")]
  kept, counts = btrm.trainable(items, {("s", "1"), ("s", "3"), ("other", "0")})
  assert [ex.id for ex in kept] == ["0", "2"] and counts["dropped_filter"] == 2 and counts["dropped_single"] == 0


def _write_items(path, items):
  with open(path, "w") as f:
    for ex in items:
      f.write(json.dumps({"prompt": ex.context[-1]["content"], "responses": list(ex.responses),
                          "rewards": list(ex.rewards)}) + "\n")


def _spct_smoke():
  spec = importlib.util.spec_from_file_location("experiment_spct", os.path.join(ROOT, "experiments", "spct.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config("smoke")


def test_stage_end_to_end_and_rerun_reuses(tmp_path):
  ctx = [{"role": "user", "content": "Say it."}]
  singles = [PreferenceExample(context=ctx, responses=[f"single {i}"], rewards=[float(i % 2)]) for i in range(3)]
  tied = [PreferenceExample(context=ctx, responses=["x", "y"], rewards=[1.0, 1.0]),
          PreferenceExample(context=ctx, responses=["x", "y", "z"], rewards=[1.0, 1.0, 0.0])]  # its best is tied
  _write_items(tmp_path / "train.jsonl", singles + tied + _toy_items(6, seed=3))
  _write_items(tmp_path / "test.jsonl", singles[:1] + _toy_items(3, seed=4))
  config = _spct_smoke()
  config.stages = ("btrm",)
  config.data.train, config.data.train_limit = f"jsonl:{tmp_path / 'train.jsonl'}", 0
  config.data.test, config.data.test_limit = f"jsonl:{tmp_path / 'test.jsonl'}", 0
  config.eval.datasets, config.eval.limit = "synthetic", 4  # n in {1, 2, 4}: single responses are scored too
  config.btrm.batch_size, config.btrm.epochs = 8, 2  # items per step split over the tests' 8 CPU devices
  configs.validate(config)
  work = tmp_path / "work"
  # The RL data is what the grpo stage's filter kept: without its verdicts the stage says what to run.
  config.grpo.filter.judge = "some/small-judge"
  with pytest.raises(ValueError, match=r"no RL-data filter verdicts at .*grpo/filter.json; run the grpo stage first"):
    btrm.run(config, str(work))
  # Verdicts as the filter writes them (`grpo.filter_items`): it dropped one single response and two toy items.
  train = common.training_items(config, "train")
  toys = [ex for ex in train if ex.responses[0].split()[0] in ("good", "bad")]  # _toy_items: each has a pair
  dropped = {id(ex) for ex in [next(ex for ex in train if ex.n == 1), *toys[:2]]}
  assert len(toys) == 6 and len({(ex.source, ex.id) for ex in train}) == 11
  rows = [{"id": ex.id, "source": ex.source, "dropped": id(ex) in dropped} for ex in train]
  (work / "grpo").mkdir(parents=True)
  with open(work / "grpo" / "filter.jsonl", "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  common.cached(str(work / "grpo" / "filter.json"), config, lambda: {"total": {}}, keys=common.RL_FILTER_KEYS)
  info = btrm.run(config, str(work))
  out = work / "btrm"
  metrics = json.loads((out / "metrics.json").read_text())
  print("counts", metrics["counts"], "before", metrics["before"], "after", metrics["after"])
  assert metrics["counts"]["train"] == {"items": 11, "kept": 4, "dropped_filter": 3, "dropped_single": 2,
                                        "dropped_no_pair": 1, "dropped_top_tied": 1, "truncated": 0}
  assert metrics["counts"]["heldout"]["dropped_single"] == 1 and metrics["before"]["pairs"] >= 3
  assert info["dropped_single"] == 2 and info["dropped_filter"] == 3
  assert info["steps"] == metrics["steps"] == 1  # 4 items x 2 epochs / batch 8
  assert (out / "final").is_dir() and (out / "metrics.jsonl").exists()
  results = json.loads((out / "results.json").read_text())
  assert results["policy"] == "btrm"
  entry = results["datasets"]["synthetic"]
  items = common.eval_items(config)["synthetic"]  # the eval stage's items
  assert entry["benchmark"] == "accuracy" and entry["official_metric"] == "accuracy" and entry["k"] == 1
  assert entry["num_items"] == len(items) == 4
  k1 = entry["metrics"]["k1"]
  assert 0.0 <= k1["accuracy"] <= 1.0 and entry["k1"] == k1["accuracy"]
  assert k1.get("n_single_excluded", 0) == sum(ex.n == 1 for ex in items)
  stamp = (out / "results.json").stat().st_mtime_ns
  assert btrm.run(config, str(work)) == json.loads((out / "done.json").read_text())
  assert (out / "results.json").stat().st_mtime_ns == stamp
