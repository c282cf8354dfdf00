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


def scripted_judge(model, calls):
  """Even items: every sample right (too easy). Odd items: sample 0 wrong, the rest right. Hinted: always right."""

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
        right = hint or index % 2 == 0 or j > 0
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
                     r"Sampled 8 judgements of 4 items: 0 parsed"):
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
