"""The RFT stage end to end on tiny:llama with a scripted judge: rejection rules, hinted samples, SFT, resume."""

import json
import os

import numpy as np
import pytest

from experiments import rft as rft_experiment
from grm_jax import models, parallel
from grm_jax.files import read_jsonl
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays
from grm_jax.stages import rft


@pytest.fixture(scope="module")
def tiny_model():
  return models.load("tiny:llama")


def scripted_judge(model, calls, rule=None):
  """Even items: every sample right (too easy). Odd items: sample 0 wrong, the rest right. Hinted: always right.
  `rule(index, sample, hint) -> right?` replaces that script (the index is the number at the end of the item's id)."""

  def judge(_, examples, sampling, *, hint=False, **kwargs):
    k, seed = sampling.k, sampling.seed
    calls.append({"k": k, "hint": hint, "n_items": len(examples)})
    rng = np.random.default_rng(seed)
    texts, perms = [], []
    for ex in examples:
      index = int(ex.id.rsplit("-", 1)[1])
      row_t, row_p = [], []
      for j in range(k):
        perm = tuple(int(i) for i in rng.permutation(ex.n))
        right = rule(index, j, hint) if rule else (hint or index % 2 == 0 or j > 0)
        best = int(np.argmax(ex.rewards))
        if ex.n == 1:
          shown = [int(ex.rewards[0]) if right else 1 - int(ex.rewards[0])]
        else:
          shown = [(9 if (perm[p] == best) == right else 3) for p in range(ex.n)]
        row_t.append(f"Critique {index}.{j}: fine.\nScores: \\boxed{{{', '.join(map(str, shown))}}}")
        row_p.append(perm)
      texts.append(row_t)
      perms.append(row_p)
    templates = ["single" if ex.n == 1 else "default" for ex in examples]
    from grm_jax.grm.prompts import CLIP_RANGES

    scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, [CLIP_RANGES[t] for t in templates],
                                                         max(ex.n for ex in examples), k)
    tokens = [[model.tokenizer.encode(t, add_special_tokens=False) for t in row] for row in texts]
    B = len(examples)
    return Judgements(
      scores=scores, valid=valid, response_mask=mask, perms=perm_arr, texts=texts, tokens=tokens,
      logprobs=[[[-1.0] * len(t) for t in row] for row in tokens],
      prompt_ids=[[[1, 2, 3] for _ in range(k)] for _ in range(B)],
      prompt_tokens=np.full((B, k), 3, np.int32), generated_tokens=np.array([[len(t) for t in r] for r in tokens]),
      stopped=np.ones((B, k), bool), templates=templates,
    )

  return judge


def test_rft_stage_rejects_filters_hints_and_fine_tunes(tmp_path, monkeypatch, tiny_model):
  calls = []
  monkeypatch.setattr(rft.common.judges, "judge", scripted_judge(tiny_model, calls))
  monkeypatch.setattr(rft.common, "load_base", lambda *a, **k: tiny_model)
  monkeypatch.setattr(rft.common, "mesh_scope", lambda config: parallel.use_mesh(None))  # one device, like tiny_model
  config = rft_experiment.get_config("smoke")
  config.data.train_limit = 6
  config.rft.sampling.k = 3
  config.rft.epochs = 4
  config.rft.optim.learning_rate = 3e-3
  config.rft.optim.warmup_steps = 0
  info = rft.run(config, str(tmp_path))

  stats = json.load(open(tmp_path / "rft" / "stats.json"))["total"]
  assert stats["items"] == 6 and stats["too_easy_items"] == 3  # the even items
  hinted_items = sum(1 for c in calls if c["hint"]) and calls[-1]["n_items"]
  assert calls[0] == {"k": 3, "hint": False, "n_items": 6}
  accepted = read_jsonl(tmp_path / "rft" / "accepted.jsonl")
  plain = [a for a in accepted if not a["hinted"]]
  assert len(plain) == 3 * 2  # odd items: samples 1 and 2
  assert len(accepted) - len(plain) == hinted_items == stats["hinted_accepted"]
  for a in accepted:
    assert a["completion_ids"][-1] == tiny_model.eos_id  # stopped samples learn to stop
    text = tiny_model.tokenizer.decode(a["prompt_ids"])
    assert "The best response is" not in text  # SFT sees the un-hinted prompt
  judgements = read_jsonl(tmp_path / "rft" / "judgements.jsonl")
  assert len(judgements) == 6 * 3 and sum(j["correct"] for j in judgements) == 3 * 3 + 3 * 2

  history = read_jsonl(tmp_path / "rft" / "metrics.jsonl")
  assert info["sft_steps"] == len(history) >= 4
  print("SFT loss by step:", [round(h["loss"], 3) for h in history])
  assert history[-1]["loss"] < 0.85 * history[0]["loss"]
  assert os.path.isdir(tmp_path / "rft" / "final")
  # Done: a rerun with the same config returns the stored result without sampling.
  calls.clear()
  assert rft.run(config, str(tmp_path))["accepted"] == info["accepted"] and not calls


def test_general_data_must_end_with_an_answer(tmp_path, tiny_model):
  bad = tmp_path / "chat.jsonl"
  bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
  with pytest.raises(ValueError, match=r"chat.jsonl: line 1: .*the last message must be the assistant"):
    rft.general_examples(str(bad), tiny_model)


def test_too_few_accepted_trajectories_stop_the_stage(tmp_path, monkeypatch):
  """A judge that is always wrong: nothing is accepted, and RFT must not pass the base params on as its output."""
  tiny_model = models.load("tiny:llama")  # its own: the stage test above hands the shared one's params to SFT
  calls = []
  inner = scripted_judge(tiny_model, calls)

  def always_wrong(model, examples, sampling, *, hint=False, **kwargs):
    j = inner(model, examples, sampling, hint=hint, **kwargs)
    j.valid[:] = False  # no parseable judgement: all wrong
    return j

  monkeypatch.setattr(rft.common.judges, "judge", always_wrong)
  monkeypatch.setattr(rft.common, "load_base", lambda *a, **k: tiny_model)
  monkeypatch.setattr(rft.common, "mesh_scope", lambda config: parallel.use_mesh(None))
  config = rft_experiment.get_config("smoke")
  config.data.train_limit = 4
  config.rft.min_accepted = 1
  with pytest.raises(rft.TooFewAccepted, match=r"0 trajectories accepted, fewer than rft.min_accepted=1\. "
                     r"Sampled 8 judgements of 4 items \(0 more left out: their best response is tied\): 0 parsed"):
    rft.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "rft" / "final") and not os.path.exists(tmp_path / "rft" / "done.json")
  config.rft.min_accepted = 0  # the smoke presets' setting: go on with the base params
  assert rft.run(config, str(tmp_path))["accepted"] == 0


def test_teacher_samples_student_learns_with_general_data_and_fixed_steps(tmp_path, monkeypatch):
  """The paper's RFT: a separate teacher (`rft.sampler`, a models.load spec) samples; its texts are re-tokenized for
  the student; general chats from an HF-layout folder are mixed in at `general_fraction`; SFT runs `steps` steps.
  The narrower hint rule ("not_too_easy") skips the hinted samples of the items all plain samples got right."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  teacher = models.load("tiny:qwen2")
  tiny_model = models.load("tiny:llama")  # the student (SFT takes over its params' buffers)
  calls, seen = [], []
  inner = scripted_judge(teacher, calls)

  def judge(model, examples, sampling, **kwargs):
    seen.append(model)
    j = inner(model, examples, sampling, **kwargs)
    j.tokens = [[[7, 7, 7] for _ in row] for row in j.tokens]  # the teacher's own ids: never trained on
    return j

  monkeypatch.setattr(rft.common.judges, "judge", judge)
  monkeypatch.setattr(rft.common, "load_base",
                      lambda config, name=None, **kw: teacher if name == "tiny:qwen2" else tiny_model)
  monkeypatch.setattr(rft.common, "mesh_scope", lambda config: parallel.use_mesh(None))
  chats = tmp_path / "chats"
  chats.mkdir()
  rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
          for i in range(40)]
  (chats / "train-00000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:20]))
  pq.write_table(pa.Table.from_pylist([{"conversations": [{"from": "human", "value": r["messages"][0]["content"]},
                                                          {"from": "gpt", "value": r["messages"][1]["content"]}]}
                                       for r in rows[20:]]), chats / "train-00001.parquet")
  config = rft_experiment.get_config("smoke")
  config.data.train_limit = 6
  config.rft.sampling.k = 3
  config.rft.sampler = "tiny:qwen2"
  config.rft.hinted_scope = "not_too_easy"
  config.rft.general_data, config.rft.general_fraction = str(chats), 0.75
  config.rft.steps, config.rft.epochs = 3, 100.0
  info = rft.run(config, str(tmp_path / "w"))

  assert seen and all(m is teacher for m in seen)
  items = rft.common.training_items(config, "train")
  odd_pairs = sum(1 for ex in items if int(ex.id.rsplit("-", 1)[1]) % 2 and ex.n > 1)
  assert 0 < odd_pairs < 6 and calls[-1] == {"k": 1, "hint": True, "n_items": odd_pairs}  # not the too-easy ones
  accepted = read_jsonl(tmp_path / "w" / "rft" / "accepted.jsonl")
  assert len(accepted) == 3 * 2 + odd_pairs
  for a in accepted:
    assert a["completion_ids"] == tiny_model.tokenizer.encode(a["text"], add_special_tokens=False) + [
      tiny_model.eos_id]
  assert info["sft_sequences"] == len(accepted) * 4  # 0.75 of the rows general
  assert info["sft_steps"] == 3


def test_general_data_is_the_asked_share_as_far_as_it_reaches():
  plain = [([1], [2])] * 10
  general = [([3], [i]) for i in range(100)]
  mixed = rft.mix_general(plain, general, 0.85, seed=0)
  assert len(mixed) == 10 + 57 and len({c[0] for _, c in mixed[10:]}) == 57  # round(10 * 0.85 / 0.15), no repeats
  assert len(rft.mix_general(plain, general[:5], 0.85, seed=0)) == 15
  assert rft.mix_general(plain, general, 0.0, seed=0) == plain


# --------------------------------------------------------------------------------------------------
# Items whose best response is tied, and Table 4's ablation switches, on hand-built items with scripted judgements.


def _item(index: int, rewards, tag: str = "h"):
  from grm_jax.data.example import PreferenceExample

  return PreferenceExample(context=[{"role": "user", "content": f"Question {index}?"}],
                           responses=[f"answer {index}.{i}" for i in range(len(rewards))], rewards=list(rewards),
                           source="hand", id=f"{tag}-{index}")


def _stage(monkeypatch, tiny_model, items, rule=None):
  """rft.run on `items` (instead of the data config's) with the scripted judge; returns (config, judge calls)."""
  calls = []
  monkeypatch.setattr(rft.common.judges, "judge", scripted_judge(tiny_model, calls, rule))
  monkeypatch.setattr(rft.common, "load_base", lambda *a, **k: tiny_model)
  monkeypatch.setattr(rft.common, "mesh_scope", lambda config: parallel.use_mesh(None))
  monkeypatch.setattr(rft.common, "training_items", lambda config, split="train": list(items))
  config = rft_experiment.get_config("smoke")
  config.rft.sampling.k = 3
  config.rft.hinted_scope = "all"
  config.rft.min_accepted = 0
  config.rft.steps = 1
  return config, calls


def test_top_tied_items_never_reach_rft_and_are_counted_in_stats_json(tmp_path, monkeypatch):
  """[5, 5, 1] and [3, 3] have no single best (Eq. 10 has no right answer for them): they are neither judged nor
  trained on, and rft/stats.json counts them. A single response with a 0/1 label has no tie and stays."""
  tiny_model = models.load("tiny:llama")  # its own: SFT takes over its params' buffers
  items = [_item(1, [1.0, 0.0]), _item(2, [5.0, 5.0, 1.0]), _item(3, [0.0, 2.0, 1.0]), _item(4, [3.0, 3.0]),
           _item(5, [1.0])]
  judged = []
  config, calls = _stage(monkeypatch, tiny_model, items, rule=lambda i, j, hint: hint or j > 0)
  inner = rft.common.judges.judge

  def recording(model, examples, sampling, **kwargs):
    judged.extend(ex.id for ex in examples)
    return inner(model, examples, sampling, **kwargs)

  monkeypatch.setattr(rft.common.judges, "judge", recording)
  info = rft.run(config, str(tmp_path))
  stats = json.load(open(tmp_path / "rft" / "stats.json"))
  assert stats["dropped_top_tied"] == {"total": 2, "by_source": {"hand": 2}} and info["dropped_top_tied"] == 2
  assert stats["total"]["items"] == 3 and stats["by_n"]["n=1"]["items"] == 1
  tied = {"h-2", "h-4"}
  assert set(judged) == {"h-1", "h-3", "h-5"}  # plain samples of all three, hinted of the two lists
  for name in ("judgements.jsonl", "accepted.jsonl"):
    rows = read_jsonl(tmp_path / "rft" / name)
    assert rows and not {r["id"] for r in rows} & tied, name
  # Samples 1 and 2 of each kept item, and the hinted sample of each list.
  assert len(read_jsonl(tmp_path / "rft" / "accepted.jsonl")) == 3 * 2 + 2


# Known judgements (item index -> right? per plain sample, right? of the hinted sample; n = 1 gets no hint).
PLAIN = {0: (True, True, True), 1: (False, True, True), 2: (False, False, False), 3: (True, False, False),
         4: (False, True, False)}
HINTED = {0: True, 1: False, 2: True, 3: True}


def _ablation_items():
  return [_item(i, [1.0, 0.0] if i % 2 else [0.0, 1.0], "a") for i in range(4)] + [_item(4, [1.0], "a")]


def _accepted_as_set(path):
  """{(item index, plain sample index or "hint", right?)} of accepted.jsonl (the scripted texts name the sample)."""
  out = set()
  for row in read_jsonl(path):
    index = int(row["id"].rsplit("-", 1)[1])
    sample = "hint" if row["hinted"] else int(row["text"].split(":")[0].rsplit(".", 1)[1])
    out.add((index, sample, row["correct"]))
  return out


@pytest.mark.parametrize("switch", ["paper", "non_hinted=False", "reject=False"])
def test_ablation_switches_change_what_rft_accepts(tmp_path, monkeypatch, tiny_model, switch):
  """Paper (§3.2): right plain samples of items not all right, and right hinted samples. Without non-hinted
  sampling: only the right hinted samples, no plain sample drawn. Without rejection: every sample, right or wrong,
  no too-easy rule. Expected sets are read off the tables above by hand."""
  config, calls = _stage(monkeypatch, tiny_model, _ablation_items(),
                         rule=lambda i, j, hint: HINTED[i] if hint else PLAIN[i][j])
  if switch != "paper":
    key, value = switch.split("=")
    config.rft[key] = value == "True"
  os.makedirs(tmp_path / "rft")
  stats = rft.sample(config, tiny_model, _ablation_items(), str(tmp_path / "rft"))["total"]  # step 1 only: no SFT
  got = _accepted_as_set(tmp_path / "rft" / "accepted.jsonl")
  if switch == "paper":
    # item 0 is too easy (3/3), item 2 has no right plain sample; hinted: items 0, 2, 3 right, item 1 wrong.
    assert got == {(1, 1, True), (1, 2, True), (3, 0, True), (4, 1, True),
                   (0, "hint", True), (2, "hint", True), (3, "hint", True)}
    assert stats["too_easy_items"] == 1
  elif switch == "non_hinted=False":
    assert got == {(0, "hint", True), (2, "hint", True), (3, "hint", True)}
    assert [c["hint"] for c in calls] == [True] and stats["samples"] == 0
    assert read_jsonl(tmp_path / "rft" / "judgements.jsonl") == []
  else:
    assert got == {(i, j, PLAIN[i][j]) for i in PLAIN for j in range(3)} | {(i, "hint", HINTED[i]) for i in HINTED}
    assert len(read_jsonl(tmp_path / "rft" / "accepted.jsonl")) == 5 * 3 + 4 and stats["too_easy_items"] == 0


def test_general_only_rft_trains_on_general_data_and_samples_nothing(tmp_path, monkeypatch):
  """`rm_data=False` (Table 4's "w/o Rejective Sampling", the RFT its RL row starts from): no judge call, no RM
  trajectory, SFT on every general chat; before, `mix_general` added nothing when no trajectory was accepted."""
  tiny_model = models.load("tiny:llama")
  config, calls = _stage(monkeypatch, tiny_model, _ablation_items(), rule=lambda i, j, hint: True)
  chats = tmp_path / "chats.jsonl"
  chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"q{i}"},
                                                    {"role": "assistant", "content": f"a{i}"}]}) + "\n"
                           for i in range(5)))
  config.rft.rm_data, config.rft.general_data = False, str(chats)
  info = rft.run(config, str(tmp_path / "w"))
  assert calls == [] and info["accepted"] == 0 and info["sft_sequences"] == 5 and info["sft_steps"] == 1
  assert json.load(open(tmp_path / "w" / "rft" / "stats.json"))["rm_data"] is False
  assert read_jsonl(tmp_path / "w" / "rft" / "judgements.jsonl") == []


@pytest.mark.parametrize(("overrides", "message"), [
  ({"rm_data": False}, r"rft.rm_data=False .* needs rft.general_data"),
  ({"non_hinted": False, "hinted": False}, r"samples nothing"),
  ({"non_hinted": False, "hinted_scope": "not_too_easy"}, r"set rft.hinted_scope=all"),
])
def test_bad_ablation_switches_are_refused(overrides, message):
  from grm_jax import configs

  config = rft_experiment.get_config("smoke")
  for key, value in overrides.items():
    config.rft[key] = value
  with pytest.raises(ValueError, match=message):
    configs.validate(config, num_devices=1)
