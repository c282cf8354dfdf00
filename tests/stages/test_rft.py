"""The RFT stage end to end on tiny:llama with a scripted judge: rejection rules, hinted samples, SFT, resume."""

import json
import os

import numpy as np
import pytest

from experiments import rft as rft_experiment
from grm_jax import models
from grm_jax.files import read_jsonl
from grm_jax.grm.judge import Judgements, judge_texts_to_arrays
from grm_jax.stages import rft


@pytest.fixture(scope="module")
def tiny_model():
  return models.load("tiny:llama")


def scripted_judge(model, calls):
  """Even items: every sample right (too easy). Odd items: sample 0 wrong, the rest right. Hinted: always right."""

  def judge(_, examples, *, k=1, seed=0, hint=False, **kwargs):
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
  monkeypatch.setattr(rft.grm, "judge", scripted_judge(tiny_model, calls))
  monkeypatch.setattr(rft.common, "load_base", lambda *a, **k: tiny_model)
  monkeypatch.setattr(rft.common, "make_mesh", lambda config: (None, ()))  # one device, like tiny_model
  config = rft_experiment.get_config("smoke")
  config.data.train_limit = 6
  config.rft.num_samples = 3
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
  with pytest.raises(ValueError, match=r"chat.jsonl:1"):
    rft.general_examples(str(bad), tiny_model)


def test_too_few_accepted_trajectories_stop_the_stage(tmp_path, monkeypatch):
  """A judge that is always wrong: nothing is accepted, and RFT must not pass the base params on as its output."""
  tiny_model = models.load("tiny:llama")  # its own: the stage test above hands the shared one's params to SFT
  calls = []
  inner = scripted_judge(tiny_model, calls)

  def always_wrong(model, examples, *, k=1, seed=0, hint=False, **kwargs):
    j = inner(model, examples, k=k, seed=seed, hint=hint, **kwargs)
    j.valid[:] = False  # no parseable judgement: all wrong
    return j

  monkeypatch.setattr(rft.grm, "judge", always_wrong)
  monkeypatch.setattr(rft.common, "load_base", lambda *a, **k: tiny_model)
  monkeypatch.setattr(rft.common, "make_mesh", lambda config: (None, ()))
  config = rft_experiment.get_config("smoke")
  config.data.train_limit = 4
  config.rft.min_accepted = 1
  with pytest.raises(rft.TooFewAccepted, match=r"0 trajectories accepted, fewer than rft.min_accepted=1\. "
                     r"Sampled 8 judgements of 4 items: 0 parsed"):
    rft.run(config, str(tmp_path))
  assert not os.path.exists(tmp_path / "rft" / "final") and not os.path.exists(tmp_path / "rft" / "done.json")
  config.rft.min_accepted = 0  # the smoke presets' setting: go on with the base params
  assert rft.run(config, str(tmp_path))["accepted"] == 0
