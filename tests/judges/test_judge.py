"""The judge layer: texts+perms -> arrays (pure), end-to-end plumbing with a scripted fake model, one real run."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from grm_jax import sampling
from grm_jax.data.example import PreferenceExample
from grm_jax.grm import rules
from grm_jax.grm.prompts import CLIP_RANGES
from grm_jax.judges import trajectories
from grm_jax.judges.model_judge import Judgements, _sample_groups, judge, judge_texts_to_arrays
from grm_jax.judges.settings import Sampling
from grm_jax.sampling.generate import GenerateOutput

# --------------------------------------------------------------------------- pure function


def test_texts_map_back_to_original_order():
  # Item with 3 responses whose true scores are (9, 2, 5). Sample 0 saw (2, 0, 1), sample 1 saw (1, 2, 0).
  perms = [[(2, 0, 1), (1, 2, 0)]]
  texts = [["Analysis: ...\nScores: \\boxed{5, 9, 2}", "Scores: [[2, 5, 9]]"]]
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms)
  np.testing.assert_array_equal(scores, [[[9, 2, 5], [9, 2, 5]]])
  np.testing.assert_array_equal(valid, [[True, True]])
  np.testing.assert_array_equal(mask, [[True, True, True]])
  np.testing.assert_array_equal(perm_arr, [[[2, 0, 1], [1, 2, 0]]])
  assert scores.dtype == np.int32 and valid.dtype == bool and mask.dtype == bool


def test_unparseable_texts_are_invalid_and_zero():
  perms = [[(1, 0), (0, 1), (1, 0), (0, 1)]]
  texts = [["no scores here", "\\boxed{7}", "\\boxed{7, x}", "\\boxed{3, 8}"]]
  scores, valid, _, _ = judge_texts_to_arrays(texts, perms)
  np.testing.assert_array_equal(valid, [[False, False, False, True]])
  np.testing.assert_array_equal(scores, [[[0, 0], [0, 0], [0, 0], [3, 8]]])


def test_mixed_n_is_padded():
  perms = [
    [(0,), (0,)],  # n = 1, 0/1 template
    [(1, 0), (0, 1)],  # n = 2
    [(3, 1, 0, 2), (0, 1, 2, 3)],  # n = 4
  ]
  texts = [
    ["\\boxed{1}", "\\boxed{5}"],  # the 0/1 template is not clipped: 5 stays 5
    ["\\boxed{4, 6}", "garbage"],
    ["\\boxed{1, 2, 3, 4}", "\\boxed{10, 20, 30, 40}"],  # 20.. clip to 10
  ]
  ranges = [CLIP_RANGES[t] for t in ("single", "default", "default")]
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, ranges)
  assert scores.shape == (3, 2, 4) and valid.shape == (3, 2) and mask.shape == (3, 4)
  np.testing.assert_array_equal(mask, [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
  np.testing.assert_array_equal(valid, [[True, True], [True, False], [True, True]])
  np.testing.assert_array_equal(scores[0], [[1, 0, 0, 0], [5, 0, 0, 0]])
  np.testing.assert_array_equal(scores[1], [[6, 4, 0, 0], [0, 0, 0, 0]])
  # shown (1, 2, 3, 4) under perm (3, 1, 0, 2): original[3]=1, [1]=2, [0]=3, [2]=4.
  np.testing.assert_array_equal(scores[2], [[3, 2, 4, 1], [10, 10, 10, 10]])
  # Padding keeps the identity tail, as voting.unpermute_batch requires.
  np.testing.assert_array_equal(perm_arr[0], [[0, 1, 2, 3], [0, 1, 2, 3]])
  np.testing.assert_array_equal(perm_arr[1], [[1, 0, 2, 3], [0, 1, 2, 3]])


def test_single_template_scores_are_checked_raw_eq11():
  """n = 1 (paper Eq. 10/11): right iff S_1 == r_1 on the score as written; out of range is wrong, never clipped."""
  texts = [["\\boxed{7}"], ["\\boxed{1}"], ["\\boxed{0}"], ["\\boxed{0}"], ["\\boxed{2}"], ["\\boxed{-1}"],
           ["\\boxed{" + "9" * 20 + "}"]]
  labels = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)
  expected = [False, True, True, False, False, False, False]
  perms = [[(0,)]] * len(texts)
  scores, valid, mask, _ = judge_texts_to_arrays(texts, perms, [CLIP_RANGES["single"]] * len(texts))
  np.testing.assert_array_equal(scores[:, 0, 0], [7, 1, 0, 0, 2, -1, np.iinfo(np.int32).max])
  rewards = labels[:, None, None]
  np.testing.assert_array_equal(rules.is_correct(scores, valid, rewards, mask[:, None])[:, 0], expected)
  np.testing.assert_array_equal(rules.rl_reward(scores, valid, rewards, mask[:, None])[:, 0],
                                [1.0 if e else -1.0 for e in expected])
  # The 1-10 templates still clip, as the model card's example does.
  scores, _, _, _ = judge_texts_to_arrays([["\\boxed{11, 0}"]], [[(0, 1)]], [CLIP_RANGES["default"]])
  np.testing.assert_array_equal(scores, [[[10, 1]]])


def test_ragged_k_is_rejected():
  with pytest.raises(ValueError, match="same number of samples"):
    judge_texts_to_arrays([["a"], ["a", "b"]], [[(0,)], [(0,), (0,)]])


# --------------------------------------------------------------------------- fake model plumbing


class _CharTokenizer:
  def decode(self, ids, skip_special_tokens=True):
    return "".join(chr(i) for i in ids)


class _FakeModel:
  """Token ids are code points; `encode_chat` renders the single user turn."""

  eos_ids = (0,)
  tokenizer = _CharTokenizer()

  def encode_chat(self, messages, add_generation_prompt=True):
    assert len(messages) == 1 and messages[0]["role"] == "user"
    return [ord(c) for c in "<user>" + messages[0]["content"] + "<assistant>"]


_TRUE = re.compile(r"TRUE=(\d+)")


def _scripted_generate(calls, garbage_every=0):
  """A fake sampler: reads the responses in shown order from the prompt and 'scores' each with its TRUE=x tag."""

  def fake(model, prompts, n=1, **kwargs):
    counts = list(n) if isinstance(n, list | tuple) else [n] * len(prompts)
    calls.append({"prompts": [list(p) for p in prompts], "n": counts, **kwargs})
    tokens = []
    for p, n_p in zip(prompts, counts, strict=True):
      shown = [int(x) for x in _TRUE.findall("".join(chr(i) for i in p))]
      rows = []
      for r in range(n_p):
        text = f"Analysis: fine.\nScores: \\boxed{{{', '.join(map(str, shown))}}}"
        if garbage_every and (len(calls) + r) % garbage_every == 0:
          text = "I refuse to score."
        rows.append([ord(c) for c in text])
      tokens.append(rows)
    return GenerateOutput(
      tokens=tokens,
      logprobs=[[[-0.5] * len(t) for t in row] for row in tokens],
      stopped=[[True] * n_p for n_p in counts],
    )

  return fake


def _examples():
  return [
    PreferenceExample("Q one?", ("one TRUE=1",), rewards=(1.0,)),
    PreferenceExample("Q two?", ("a TRUE=7", "b TRUE=3"), rewards=(1.0, 0.0)),
    PreferenceExample("Q four?", ("w TRUE=2", "x TRUE=9", "y TRUE=4", "z TRUE=6"), rewards=(0, 1, 0, 0)),
  ]


def test_fake_model_end_to_end(monkeypatch):
  calls = []
  monkeypatch.setattr(sampling, "generate", _scripted_generate(calls))
  k = 6
  out = judge(_FakeModel(), _examples(),
              Sampling(k=k, seed=3, max_new_tokens=32, temperature=0.7, single_template="default"))
  assert isinstance(out, Judgements)
  assert out.scores.shape == (3, k, 4) and out.valid.shape == (3, k) and out.response_mask.shape == (3, 4)
  assert out.valid.all() and out.num_invalid == 0 and out.parse_failure_rate == 0.0
  # Scores come back in the original order whatever each sample's shuffle was.
  np.testing.assert_array_equal(out.scores[0], np.tile([1, 0, 0, 0], (k, 1)))
  np.testing.assert_array_equal(out.scores[1], np.tile([7, 3, 0, 0], (k, 1)))
  np.testing.assert_array_equal(out.scores[2], np.tile([2, 9, 4, 6], (k, 1)))
  # Each sample's prompt shows the responses in its recorded permutation.
  exs = _examples()
  for b, ex in enumerate(exs):
    for j in range(k):
      text = "".join(chr(i) for i in out.prompt_ids[b][j])
      shown = [int(x) for x in _TRUE.findall(text)]
      true = [int(_TRUE.search(r).group(1)) for r in ex.responses]
      assert shown == [true[i] for i in out.perms[b, j, : ex.n]]
      assert out.prompt_tokens[b, j] == len(out.prompt_ids[b][j])
      assert out.generated_tokens[b, j] == len(out.tokens[b][j]) == len(out.texts[b][j])
  # The four-response item is actually shuffled, differently across samples.
  assert len({tuple(p) for p in out.perms[2]}) > 1
  # One sampler call per round; identical prompts are sent once with their multiplicity: the n = 1 item is
  # one prompt with n = k, and every sample slot is filled exactly once.
  assert len(calls) == 1
  assert sum(sum(c["n"]) for c in calls) == 3 * k
  single = [
    n_p for c in calls for p, n_p in zip(c["prompts"], c["n"], strict=True) if "one TRUE=1" in "".join(map(chr, p))
  ]
  assert single == [k]
  for c in calls:
    assert c["temperature"] == 0.7 and c["max_new_tokens"] == 32
    assert len({tuple(p) for p in c["prompts"]}) == len(c["prompts"])  # no duplicate prompts within a call
  assert out.templates == ["default", "default", "default"]


def test_fake_model_seed_batching_and_invalid(monkeypatch):
  calls = []
  monkeypatch.setattr(sampling, "generate", _scripted_generate(calls, garbage_every=3))
  a = judge(_FakeModel(), _examples(), Sampling(k=4, seed=11, batch_items=1))
  monkeypatch.setattr(sampling, "generate", _scripted_generate([]))
  b = judge(_FakeModel(), _examples(), Sampling(k=4, seed=11, batch_items=3))
  c = judge(_FakeModel(), _examples(), Sampling(k=4, seed=12, batch_items=3))
  # Permutations depend on the seed only, not on how items are batched.
  np.testing.assert_array_equal(a.perms, b.perms)
  assert not np.array_equal(b.perms, c.perms)
  # batch_items=1 makes one round per item; generate never sees two items' prompts at once.
  assert all(
    len({"".join(map(chr, p)).split("#### Conversation Context ####")[1][:8] for p in call["prompts"]}) == 1
    for call in calls
  )
  # Unparseable samples are invalid, zero and counted; the rest still map back correctly.
  assert 0 < a.num_invalid < a.valid.size
  assert np.all(a.scores[~a.valid] == 0)
  np.testing.assert_array_equal(a.scores[1][a.valid[1]], np.tile([7, 3, 0, 0], (a.valid[1].sum(), 1)))
  # n = 1 uses the 0/1 template by default.
  assert a.templates[0] == "single" and "The score is 0 or 1" in "".join(map(chr, a.prompt_ids[0][0]))


def test_judge_keeps_single_template_scores_raw_through_to_eq10(monkeypatch):
  """`judge` parses the 0/1 template unclipped, so a 7 on a right response is a wrong trajectory (RFT, GRPO,
  meta-RM labels); the 1-10 template at evaluation is never checked against a 0/1 label."""
  monkeypatch.setattr(sampling, "generate", _scripted_generate([]))
  items = [PreferenceExample("Q?", ("r TRUE=7",), rewards=(1.0,)),
           PreferenceExample("Q?", ("r TRUE=1",), rewards=(1.0,)),
           PreferenceExample("Q?", ("a TRUE=7", "b TRUE=3"), rewards=(1.0, 0.0))]
  out = judge(_FakeModel(), items, Sampling(k=2, seed=0))
  np.testing.assert_array_equal(out.scores[:, :, 0], [[7, 7], [1, 1], [7, 7]])
  np.testing.assert_array_equal(trajectories.correctness(out, items), [[False, False], [True, True], [True, True]])
  evaluation = judge(_FakeModel(), items, Sampling(k=2, seed=0, single_template="default"))
  np.testing.assert_array_equal(trajectories.label_comparable(evaluation, items), [False, False, True])
  with pytest.raises(ValueError, match="cannot be checked against a 0/1 label"):
    trajectories.correctness(evaluation, items)
  np.testing.assert_array_equal(trajectories.correctness(evaluation, items, skip_incomparable=True),
                                [[False, False], [False, False], [True, True]])


def test_greedy_sends_each_sample_with_n1(monkeypatch):
  calls = []
  monkeypatch.setattr(sampling, "generate", _scripted_generate(calls))
  out = judge(_FakeModel(), _examples()[:1], Sampling(k=3, temperature=0.0))
  assert [c["n"] for c in calls] == [[1, 1, 1]] and len(calls[0]["prompts"]) == 3
  assert out.valid.all()


def test_hint_includes_helpsteer2_preference_strength(monkeypatch):
  monkeypatch.setattr(sampling, "generate", _scripted_generate([]))
  hs2 = PreferenceExample("Q hs2?", ("a TRUE=3", "b TRUE=8"), best=1, source="helpsteer2-preference",
                          metadata={"preference_strength": 2, "strength": 2})
  plain = _examples()[1]  # a pair without a labelled strength
  out = judge(_FakeModel(), [hs2, plain], Sampling(k=4, seed=5), hint=True)
  for j in range(4):
    shown = 1 + list(out.perms[0, j, :2]).index(1)  # the hint names the best's *shown* position
    text = "".join(map(chr, out.prompt_ids[0][j]))
    assert text.endswith(f"The best response is: Response {shown} (better than Response {3 - shown})<assistant>")
    other = "".join(map(chr, out.prompt_ids[1][j]))
    assert re.search(r"The best response is: Response \d<assistant>$", other)
  assert {tuple(p[:2]) for p in out.perms[0]} == {(0, 1), (1, 0)}  # both orders occur, so both positions are checked
  # Without hint=True the strength is never shown.
  out = judge(_FakeModel(), [hs2], Sampling(k=2, seed=5))
  assert "better than" not in "".join(map(chr, out.prompt_ids[0][0]))


def test_groups_by_multiplicity():
  ids = [(1,), (2,), (1,), (3,), (1,), (2,)]
  assert _sample_groups(ids, greedy=False) == [[0, 2, 4], [1, 5], [3]]
  assert _sample_groups(ids[:2], greedy=True) == [[0], [1]]


def test_empty_batch(monkeypatch):
  monkeypatch.setattr(sampling, "generate", _scripted_generate([]))
  out = judge(_FakeModel(), [], Sampling(k=4))
  assert out.scores.shape == (0, 4, 1) and out.valid.shape == (0, 4)


# --------------------------------------------------------------------------- real model


def test_real_model_runs(smollm2):
  from grm_jax.data.synthetic import synthetic

  examples = list(synthetic("test", size=2, seed=0, n=2))
  t0 = time.perf_counter()
  # seed 4 repeats the shuffle within both items, so all four samples go through one generate(n=2) call:
  # one compiled program and a shared prefix (a mixed draw compiles an n=1 and an n=2 program: ~2x slower).
  out = judge(smollm2, examples, Sampling(k=2, max_new_tokens=48, temperature=0.5, seed=4))
  wall = time.perf_counter() - t0
  assert out.scores.shape == (2, 2, 2) and out.scores.dtype == np.int32
  assert out.valid.shape == (2, 2) and out.valid.dtype == bool
  assert out.response_mask.all()
  assert all(len({tuple(p) for p in out.perms[b]}) == 1 for b in range(2))
  assert all(isinstance(t, str) and t for row in out.texts for t in row)
  assert np.all(out.generated_tokens > 0) and np.all(out.generated_tokens <= 48)
  assert np.all(out.prompt_tokens > 100)
  assert np.all(out.scores[~out.valid] == 0)
  print(
    f"\nreal judge: parse failures {out.num_invalid}/{out.valid.size} ({out.parse_failure_rate:.0%}), "
    f"{out.items_per_second:.3f} items/s, {out.tokens_per_second:.1f} gen tok/s over {out.sampler_seconds:.1f} s "
    f"sampler ({wall:.1f} s total incl. compile), prompt tokens {out.prompt_tokens.tolist()}"
  )
