"""The synthetic critic: its judgements parse, follow its belief, and are wrong exactly when it is mistaken."""

import re

import numpy as np
import pytest

from grm_jax.data.example import PreferenceExample
from grm_jax.data.synthetic import synthetic
from grm_jax.judges.settings import Sampling
from grm_jax.judges.synthetic_critic import critic_judge
from grm_jax.judges.trajectories import correctness


@pytest.fixture(scope="module")
def items():
  return synthetic("train", size=60, n=(1, 2, 4))


def test_noise_free_critic_is_always_right_and_parseable(items):
  j = critic_judge(items, Sampling(k=3, seed=0, template="compact"), noise=0.0)
  assert j.valid.all() and correctness(j, items).all()
  for ex, row in zip(items, j.texts, strict=True):  # each judgement opens its analysis with the worked answer
    reference = ex.metadata["worked"].replace("{}", ex.metadata["answer"])
    assert all(t.split("\n")[1].startswith(f"Analysis: {reference} ") and "\\boxed{" in t for t in row), row


def test_a_mistaken_critic_is_always_wrong(items):
  j = critic_judge(items, Sampling(k=2, seed=1), noise=1.0)
  assert j.valid.all() and not correctness(j, items).any()


def test_noise_sets_the_error_rate_and_hints_remove_it(items):
  j = critic_judge(items, Sampling(k=8, seed=2), noise=0.3)
  assert abs(1 - correctness(j, items).mean() - 0.3) < 0.08
  h = critic_judge(items, Sampling(k=2, seed=3), noise=0.9, hint=True)
  assert correctness(h, items).all()


def test_scores_follow_the_shuffled_order(items):
  j = critic_judge(items, Sampling(k=4, seed=4), noise=0.0)
  for b, ex in enumerate(items):
    if ex.n > 1:
      assert (np.argmax(j.scores[b, :, : ex.n], axis=-1) == np.argmax(ex.rewards)).all()


def test_items_without_synthetic_metadata_are_rejected_by_name():
  ex = PreferenceExample(context="q", responses=("a", "b"), rewards=(1.0, 0.0), source="rewardbench/x", id="7")
  with pytest.raises(ValueError, match="rewardbench/x/7"):
    critic_judge([ex], Sampling(k=1))


def test_each_verdict_carries_the_score_the_box_repeats(items):
  j = critic_judge(items, Sampling(k=2, seed=5, template="compact"), noise=0.3)
  for ex, row in zip(items, j.texts, strict=True):
    for text in row:
      inline = re.findall(r": (right|wrong), (\d+)\.", text)
      boxed = re.search(r"\\boxed\{(.*)\}", text).group(1).split(", ")
      assert [s for _, s in inline] == boxed and len(boxed) == ex.n
      for verdict, s in inline:  # right earns 8-10 (1 on the 0/1 template), wrong 1-3 (0)
        assert (int(s) >= 8 or (ex.n == 1 and s == "1")) if verdict == "right" else int(s) <= 3
