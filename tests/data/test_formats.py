"""HF-layout readers on tiny files written from each data set's public schema (none is in the benchmark folder)."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from grm_jax import data
from grm_jax.data import DataError


def _jsonl(path, rows, gz=False):
  text = "\n".join(json.dumps(r) for r in rows) + "\n"
  path.parent.mkdir(parents=True, exist_ok=True)
  if gz:
    with gzip.open(path, "wt", encoding="utf-8") as f:
      f.write(text)
  else:
    path.write_text(text)
  return path


def _parquet(path, rows):
  path.parent.mkdir(parents=True, exist_ok=True)
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path


# ---------------------------------------------------------------------------------------------- PPE


def _ppe_pref_row(i, winner):
  return {
    "question_id": f"q{i}",
    "model_a": "m1",
    "model_b": "m2",
    "winner": winner,
    "prompt": f"prompt {i}",
    "response_1": f"a{i}",
    "response_2": f"b{i}",
    "language": "English",
    "is_code": False,
    "hard_prompt": True,
  }


def test_ppe_human_preference(tmp_path):
  rows = [_ppe_pref_row(0, "model_a"), _ppe_pref_row(1, "model_b"), _ppe_pref_row(2, "tie (bothbad)")]
  path = _parquet(tmp_path / "PPE-Human-Preference-V1" / "data" / "test-00000-of-00001.parquet", rows)
  out = data.read_ppe(path.parents[1], split="test")
  assert len(out) == 2 and out.filtered == 1
  assert out[0].best == 0 and out[1].best == 1 and out[1].rewards == (0.0, 1.0)
  assert out[0].category == "PPE Preference" and out[0].metadata["hard_prompt"] is True and out[0].id == "q0"
  ties = data.read_ppe(path, include_ties=True)
  assert len(ties) == 3 and ties[2].best is None and ties[2].rewards == (0.5, 0.5)


def test_ppe_correctness_pairs_and_best_of_k(tmp_path):
  row = {
    "question_id": "7",
    "model_name": "gpt",
    "prompt": "Solve x.",
    **{f"response_{k}": f"resp {k}" for k in range(1, 5)},
    "scores": [True, False, False, True],
    "sampled_conflict_pairs": [[0, 1], [2, 3]],
  }
  path = _parquet(tmp_path / "PPE-MATH-Best-of-K" / "data" / "train-00000-of-00001.parquet", [row])
  pairs = data.read_ppe(tmp_path / "PPE-MATH-Best-of-K")
  assert [p.responses for p in pairs] == [("resp 1", "resp 2"), ("resp 4", "resp 3")]
  assert all(p.best == 0 and p.source == "ppe/MATH" and p.category == "PPE Correctness" for p in pairs)
  assert pairs[1].id == "7:gpt:2-3"
  bok = data.read_ppe(path, correctness_mode="best_of_k")
  assert len(bok) == 1 and bok[0].n == 4 and bok[0].rewards == (1.0, 0.0, 0.0, 1.0) and bok[0].best is None


def test_ppe_bad_row_names_file_and_row(tmp_path):
  rows = [_ppe_pref_row(0, "model_a"), _ppe_pref_row(1, "model_c")]
  path = _parquet(tmp_path / "test-00000-of-00001.parquet", rows)
  with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet, row 1: unknown 'winner' 'model_c'"):
    data.read_ppe(path)


def test_split_selects_hf_files(tmp_path):
  _parquet(tmp_path / "data" / "test-00000-of-00001.parquet", [_ppe_pref_row(0, "model_a")])
  with pytest.raises(DataError, match=r"no file for split 'train'"):
    data.read_ppe(tmp_path, split="train")


# ---------------------------------------------------------------------------------------------- HelpSteer2


def _hs2(prompt, response, h, c=3):
  return {
    "prompt": prompt,
    "response": response,
    "helpfulness": h,
    "correctness": c,
    "coherence": 4,
    "complexity": 1,
    "verbosity": 2,
  }


def test_helpsteer2_groups_consecutive_rows(tmp_path):
  multi = "Hi\n<extra_id_1>Assistant\nHello!\n<extra_id_1>User\nTell me a joke."
  rows = [_hs2("p1", "r1", 3), _hs2("p1", "r2", 1), _hs2(multi, "j1", 2), _hs2(multi, "j2", 2), _hs2("lone", "x", 4)]
  _jsonl(tmp_path / "train.jsonl.gz", rows, gz=True)
  _jsonl(tmp_path / "validation.jsonl.gz", rows[:2], gz=True)
  out = data.read_helpsteer2(tmp_path, split="train")
  assert len(out) == 2 and out.filtered == 1  # the lone prompt has nothing to compare
  assert out[0].rewards == (3.0, 1.0) and out[0].best == 0
  assert out[0].metadata["attributes"][1]["correctness"] == 3.0
  assert out[1].best is None  # equal helpfulness
  assert [t["role"] for t in out[1].context] == ["user", "assistant", "user"]
  assert out[1].query == "Tell me a joke." and out[1].context[1]["content"] == "Hello!"
  by_correctness = data.read_helpsteer2(tmp_path / "validation.jsonl.gz", attribute="correctness")
  assert by_correctness[0].rewards == (3.0, 3.0)


def test_helpsteer2_bad_row_names_line(tmp_path):
  rows = [_hs2("p1", "r1", 3), {"response": "no prompt"}, _hs2("p2", "a", 1), _hs2("p2", "b", None)]
  path = _jsonl(tmp_path / "train.jsonl", rows)
  with pytest.raises(DataError, match=r"train\.jsonl, line 2: missing key 'prompt'"):
    data.read_helpsteer2(path)
  out = data.read_helpsteer2(path, on_error="skip")
  assert out.skipped == 2 and "line 3 to 4: missing attribute 'helpfulness'" in out.errors[1]


def test_helpsteer2_preference(tmp_path):
  rows = [
    {"split": "train", "prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": -2},
    {"split": "train", "prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": 3},
    {"split": "train", "prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": 0},
    {"split": "validation", "prompt": "q", "response_1": "c", "response_2": "d", "preference_strength": 1},
  ]
  path = _jsonl(tmp_path / "helpsteer2" / "preference" / "preference.jsonl.gz", rows, gz=True)
  _jsonl(tmp_path / "helpsteer2" / "train.jsonl.gz", [_hs2("p", "a", 1), _hs2("p", "b", 2)], gz=True)
  out = data.read_helpsteer2_preference(path, split="train")
  assert [e.best for e in out] == [0, 1] and out.filtered == 2
  assert out[0].metadata["strength"] == 2 and out[1].metadata["preference_strength"] == 3
  assert len(data.read_helpsteer2_preference(path)) == 3
  assert len(data.load_dataset("helpsteer2-preference", root=tmp_path, split="validation")) == 1
  assert len(data.load_dataset("helpsteer2", root=tmp_path)) == 1  # the ratings only, not preference/


def test_helpsteer2_preference_strength_reaches_the_judge_hint(tmp_path):
  from grm_jax import grm

  row = {"split": "train", "prompt": "p", "response_1": "a", "response_2": "b", "preference_strength": -3}
  (ex,) = data.load_dataset(f"helpsteer2-preference:{_jsonl(tmp_path / 'pref.jsonl', [row])}")
  p = grm.grm_prompt(ex.context, ex.responses, perm=(1, 0), hint_best=ex.best, hint_strength=ex.metadata["strength"])
  assert p.messages[0]["content"].endswith("The best response is: Response 2 (much better than Response 1)")


# ---------------------------------------------------------------------------------------------- OffsetBias


def test_offsetbias_label_picks_the_preferred_output(tmp_path):
  rows = [
    {"instruction": "Fix: harder then", "output_1": "harder than", "output_2": "It is fine.", "label": 1},
    {"instruction": "Say hi", "output_1": "bye", "output_2": "hi", "label": 2},
  ]
  _jsonl(tmp_path / "offsetbias" / "train.jsonl", rows)
  out = data.load_dataset("offsetbias", root=tmp_path, split="train")
  assert [e.rewards for e in out] == [(1.0, 0.0), (0.0, 1.0)] and [e.best for e in out] == [0, 1]
  assert out[1].responses == ("bye", "hi") and out[1].query == "Say hi"
  assert {e.source for e in out} == {"offsetbias"} and out[0].id == "train.jsonl:1"
  assert len(data.load_dataset(f"offsetbias:{tmp_path / 'offsetbias'}", limit=1)) == 1
  for label in (0, 3, True, "1"):
    bad = _jsonl(tmp_path / f"bad{label}.jsonl", [{**rows[0], "label": label}])
    with pytest.raises(DataError, match=f"bad{label}.jsonl, line 1: field 'label' must be 1 or 2"):
      data.read_offsetbias(bad)


# ---------------------------------------------------------------------------------------------- UltraFeedback


def test_ultrafeedback_raw_multi_completion(tmp_path):
  comps = [
    {"model": f"m{i}", "response": f"answer {i}", "overall_score": o, "fine-grained_score": f}
    for i, (o, f) in enumerate([(7.0, 4.25), (8.5, 3.0), (5.0, 2.5), (6.0, 4.0)])
  ]
  rows = [{"source": "evol_instruct", "instruction": "Explain X.", "models": ["m0"], "completions": comps}]
  path = _jsonl(tmp_path / "ultrafeedback.jsonl", rows)
  out = data.read_ultrafeedback(path)
  assert out[0].n == 4 and out[0].best == 0 and out[0].rewards == (4.25, 3.0, 2.5, 4.0)
  assert out[0].source == "ultrafeedback/evol_instruct"
  assert data.read_ultrafeedback(path, score_key="overall_score")[0].best == 1
  comps[2]["fine-grained_score"] = "N/A"
  _jsonl(path, rows)
  with pytest.raises(DataError, match=r"line 1: completions\[2\]\.fine-grained_score is 'N/A'"):
    data.read_ultrafeedback(path)


def test_ultrafeedback_binarized_parquet(tmp_path):
  row = {
    "prompt": "Hi?",
    "prompt_id": "abc",
    "chosen": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
    "rejected": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Go away."}],
    "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}],
    "score_chosen": 9.0,
    "score_rejected": 2.0,
  }
  _parquet(tmp_path / "ultrafeedback" / "data" / "train_prefs-00000-of-00001.parquet", [row])
  _parquet(tmp_path / "ultrafeedback" / "data" / "test_prefs-00000-of-00001.parquet", [row, row])
  out = data.load_dataset("ultrafeedback", root=tmp_path, split="train_prefs")
  assert len(out) == 1
  ex = out[0]
  assert ex.responses == ("Hello.", "Go away.") and ex.best == 0 and ex.id == "abc" and ex.query == "Hi?"
  assert ex.metadata == {"score_chosen": 9.0, "score_rejected": 2.0}
  assert len(data.read_ultrafeedback(tmp_path / "ultrafeedback", split="test_prefs")) == 2


def test_ultrafeedback_plain_string_pairs(tmp_path):
  rows = [{"prompt": "Q", "chosen": "good", "rejected": "bad", "metadata": {"score_chosen": 5}}]
  out = data.read_ultrafeedback(_jsonl(tmp_path / "train_clean.jsonl", rows))
  assert out[0].responses == ("good", "bad") and out[0].context == ({"role": "user", "content": "Q"},)


# ---------------------------------------------------------------------------------------------- Skywork


def test_skywork_message_lists(tmp_path):
  ctx = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
  rows = [
    {
      "chosen": ctx + [{"role": "assistant", "content": "good"}],
      "rejected": ctx + [{"role": "assistant", "content": "bad"}],
      "source": "magpie_ultra",
    },
    {
      "chosen": ctx + [{"role": "assistant", "content": "good"}],
      "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "bad"}],
      "source": "x",
    },
  ]
  path = _parquet(tmp_path / "train-00000-of-00001.parquet", rows)
  with pytest.raises(DataError, match=r"row 1: 'chosen' and 'rejected' conversations differ"):
    data.read_skywork(path)
  out = data.read_skywork(path, on_error="skip")
  assert len(out) == 1 and out.skipped == 1
  ex = out[0]
  assert ex.context == tuple(ctx) and ex.responses == ("good", "bad") and ex.source == "skywork/magpie_ultra"
  assert ex.id == "train-00000-of-00001.parquet:0"


# ---------------------------------------------------------------------------------------------- plain JSONL


def test_plain_jsonl_forms_and_defaults(tmp_path):
  rows = [
    {"prompt": "2+2?", "responses": ["4", "5"], "best": 0},
    {"conversation": [{"role": "user", "content": "hi"}], "responses": ["a"], "rewards": [1], "id": 9},
    {"prompt": "x", "responses": ["a", "b"], "rewards": [0, 1], "source": "mine", "category": "c", "id": "k"},
  ]
  out = data.read_examples(_jsonl(tmp_path / "set.jsonl", rows))
  assert [e.best for e in out] == [0, None, 1]
  assert out[0].source == "set" and out[0].id == "set.jsonl:1"
  assert out[1].id == "9" and out[2].source == "mine"
  assert data.load_dataset(str(tmp_path / "set.jsonl")) == out
  assert data.load_dataset(f"jsonl:{tmp_path / 'set.jsonl'}", limit=2) == out[:2]


def test_plain_jsonl_bad_lines(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text(
    '{"prompt": "q", "responses": ["a"], "rewards": [1]}\n{"prompt": "q", "responses": \n'
    '{"prompt": "q", "responses": ["a", "b"], "rewards": [1]}\n'
  )
  with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
    data.read_examples(path)
  out = data.read_examples(path, on_error="skip")
  assert len(out) == 1 and out.skipped == 2
  assert "line 3: PreferenceExample.rewards: has 1 values but there are 2 responses" in out.errors[1]


def test_on_error_is_checked(tmp_path):
  with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
    data.read_examples(_jsonl(tmp_path / "a.jsonl", [{"prompt": "q", "responses": ["a"], "rewards": [1]}]),
                       on_error="x")


def test_trl_preference_jsonl_reads_as_pairs(tmp_path):
  """The format most users have: TRL's prompt / chosen / rejected, as strings or as whole conversations."""
  rows = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5", "score_chosen": 9.0},
    {"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
     "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}], "id": "c2"},
  ]
  a, b = data.read_examples(_jsonl(tmp_path / "prefs.jsonl", rows))
  assert a.context == ({"role": "user", "content": "2+2?"},) and a.responses == ("4", "5")
  assert a.rewards == (1.0, 0.0) and a.best == 0 and a.metadata == {"score_chosen": 9.0}
  assert a.source == "prefs" and a.id == "prefs.jsonl:1"
  assert b.context == ({"role": "user", "content": "Hi"},) and b.responses == ("Hello!", "Go away.") and b.id == "c2"
  bad = [{"chosen": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "a"}],
          "rejected": [{"role": "user", "content": "Bye"}, {"role": "assistant", "content": "b"}]}]
  with pytest.raises(DataError, match="differ before their final assistant turn"):
    data.read_examples(_jsonl(tmp_path / "bad.jsonl", bad))
