"""GRPO's RL-data filter (paper App. C.1): items a judge gets right in every sample are dropped before RL."""

import json

import pytest

from experiments import spct
from grm_jax import models
from grm_jax.files import read_jsonl
from grm_jax.stages import common, grpo
from tests.stages.test_rft import scripted_judge


@pytest.fixture(scope="module")
def tiny_model():
  return models.load("tiny:llama")


def _config(judge: str, samples: int = 3):
  config = spct.get_config("smoke")
  config.data.train_limit = 6
  config.grpo.filter.judge = judge
  config.grpo.filter.sampling.k = samples
  return config


def test_scripted_judge_counts_and_reuse(tmp_path, monkeypatch, tiny_model):
  """The scripted judge gets even items right in all samples and odd items right in all but the first: the even ones
  go, and the counts say so overall and by source. A rerun reuses the counts without judging again."""
  calls, loaded = [], []
  monkeypatch.setattr(common.judges, "judge", scripted_judge(tiny_model, calls))
  monkeypatch.setattr(common, "load_base", lambda config, name, **kw: loaded.append(name) or tiny_model)
  config = _config("some/small-judge")
  items = common.training_items(config, "train")
  assert len(items) == 6
  kept, summary = grpo.filter_items(config, items, str(tmp_path))
  assert loaded == ["some/small-judge"] and calls == [{"k": 3, "hint": False, "n_items": 6}]
  even = [ex for ex in items if int(ex.id.rsplit("-", 1)[1]) % 2 == 0]
  assert [ex.id for ex in kept] == [ex.id for ex in items if ex not in even]
  assert summary["total"] == {"items": 6, "dropped": len(even), "kept": 6 - len(even), "samples": 18,
                              "right_samples": 3 * len(even) + 2 * (6 - len(even)), "parsed_samples": 18}
  assert sum(v["dropped"] for v in summary["by_source"].values()) == len(even)
  rows = read_jsonl(tmp_path / "filter.jsonl")
  assert [r["dropped"] for r in rows] == [ex in even for ex in items]
  assert json.load(open(tmp_path / "filter.json"))["total"] == summary["total"]
  calls.clear()
  assert grpo.filter_items(config, items, str(tmp_path))[1] == summary and not calls
  config.grpo.filter.sampling.k = 2  # other settings: judged again
  grpo.filter_items(config, items, str(tmp_path))
  assert calls == [{"k": 2, "hint": False, "n_items": 6}]


def test_an_infallible_judge_leaves_nothing_and_the_stage_says_so(tmp_path):
  """The built-in critic without noise is right every time: every item is too easy, and GRPO stops in one line
  instead of training on zero-advantage groups."""
  config = _config("synthetic-critic")
  config.grpo.filter.critic_noise = 0.0
  with pytest.raises(grpo.NothingToLearn, match=r"got all 6 training items right in all 3 samples"):
    grpo.filter_items(config, common.training_items(config, "train"), str(tmp_path))


def test_a_fallible_judge_keeps_the_items_it_missed(tmp_path):
  config = _config("synthetic-critic", samples=2)
  config.data.train_limit = 32
  config.grpo.filter.critic_noise = 0.5
  items = common.training_items(config, "train")
  kept, summary = grpo.filter_items(config, items, str(tmp_path))
  rows = read_jsonl(tmp_path / "filter.jsonl")
  assert summary["total"]["dropped"] == sum(r["right"] == 2 for r in rows) == len(items) - len(kept)
  assert 0 < len(kept) < len(items)  # noise 0.5: P(both right) = 1/4 per item, 32 items


@pytest.mark.parametrize("template, rl_ids", [
  ("compact", ["h-0", "h-2", "h-4"]),
  pytest.param("compact_judge", ["h-0", "h-2"], marks=pytest.mark.slow),  # a second GRPO run: `pairwise_only` below
])
def test_top_tied_items_never_reach_the_filter_or_the_rollouts(tmp_path, monkeypatch, template, rl_ids):
  """[2, 2, 1] and [1, 1] have no right judgement under Eq. 10 (a group on one is all -1: zero advantage): GRPO
  leaves them out before the RL-data filter and the steps, and done.json counts them. The n = 1 item stays for the
  GRM; the LLM-as-a-Judge learns on pairwise data only (paper App. C.2): its RL data has no n = 1 item, counted."""
  from grm_jax import parallel
  from grm_jax.data.example import PreferenceExample

  model = models.load("tiny:llama")  # its own: the state takes over its params' buffers
  calls, judged = [], []
  inner = scripted_judge(model, calls, rule=lambda i, j, hint: j > 0)  # never all right: the filter keeps all

  def judge(m, examples, sampling, **kwargs):
    judged.append([ex.id for ex in examples])
    return inner(m, examples, sampling, **kwargs)

  def item(i, rewards):
    return PreferenceExample(context=[{"role": "user", "content": f"Q{i}?"}], rewards=rewards,
                             responses=[f"a{i}.{r}" for r in range(len(rewards))], source="hand", id=f"h-{i}")

  items = [item(0, [1.0, 0.0]), item(1, [2.0, 2.0, 1.0]), item(2, [0.0, 1.0, 0.5]), item(3, [1.0, 1.0]),
           item(4, [1.0])]
  monkeypatch.setattr(common.judges, "judge", judge)
  monkeypatch.setattr(common, "load_base", lambda *a, **kw: model)
  monkeypatch.setattr(common, "mesh_scope", lambda config: parallel.use_mesh(None))
  monkeypatch.setattr(common, "training_items", lambda config, split="train": list(items))
  config = _config("some/small-judge")
  config.grm.template = template
  config.grpo.init, config.grpo.steps, config.grpo.prompts_per_step = "base", 2, 3
  info = grpo.run(config, str(tmp_path), progress=False)
  assert info["dropped_top_tied"] == {"total": 2, "by_source": {"hand": 2}} and info["items"] == len(rl_ids)
  assert info["dropped_single"] == 3 - len(rl_ids)
  assert judged[0] == rl_ids  # the filter
  assert judged[1:] and all(set(ids) <= set(rl_ids) for ids in judged[1:])  # the rollouts
  assert {r["item"] for r in read_jsonl(tmp_path / "grpo" / "rollouts.jsonl")} <= {f"hand/{i}" for i in rl_ids}


@pytest.mark.parametrize("template, kept", [("compact", 3), ("default", 3), ("compact_judge", 2), ("judge", 2)])
def test_the_judge_learns_on_pairwise_data_only(template, kept):
  """App. C.2: the LLM-as-a-Judge's RL data has no single-response item (the GRM's keeps them, 0/1 template)."""
  from grm_jax.data.example import PreferenceExample

  items = [PreferenceExample(context=[{"role": "user", "content": "q"}], responses=["a"] * n,
                             rewards=[1.0] + [0.0] * (n - 1), source="s", id=str(i)) for i, n in enumerate((1, 2, 4))]
  config = _config("")
  config.grm.template = template
  got, single = grpo.pairwise_only(config, items)
  assert [ex.id for ex in got] == [ex.id for ex in items if ex.n >= 2 or kept == 3] and single == 3 - kept
