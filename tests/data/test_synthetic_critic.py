"""The synthetic critic: its judgements parse, follow its belief, and are wrong exactly when it is mistaken."""

import numpy as np
import pytest

from grm_jax.data.example import PreferenceExample
from grm_jax.data.synthetic import synthetic
from grm_jax.data.synthetic_critic import critic_judge
from grm_jax.stages.common import correctness


@pytest.fixture(scope="module")
def items():
  return synthetic("train", size=60, n=(1, 2, 4))


def test_noise_free_critic_is_always_right_and_parseable(items):
  j = critic_judge(items, k=3, seed=0, noise=0.0, template="compact")
  assert j.valid.all() and correctness(j, items).all()
  assert "\\boxed{" in j.texts[0][0] and "The correct answer is" in j.texts[0][0]


def test_a_mistaken_critic_is_always_wrong(items):
  j = critic_judge(items, k=2, seed=1, noise=1.0)
  assert j.valid.all() and not correctness(j, items).any()


def test_noise_sets_the_error_rate_and_hints_remove_it(items):
  j = critic_judge(items, k=8, seed=2, noise=0.3)
  assert abs(1 - correctness(j, items).mean() - 0.3) < 0.08
  h = critic_judge(items, k=2, seed=3, noise=0.9, hint=True)
  assert correctness(h, items).all()


def test_scores_follow_the_shuffled_order(items):
  j = critic_judge(items, k=4, seed=4, noise=0.0)
  for b, ex in enumerate(items):
    if ex.n > 1:
      assert (np.argmax(j.scores[b, :, : ex.n], axis=-1) == np.argmax(ex.rewards)).all()


def test_items_without_synthetic_metadata_are_rejected_by_name():
  ex = PreferenceExample(context="q", responses=("a", "b"), rewards=(1.0, 0.0), source="rewardbench/x", id="7")
  with pytest.raises(ValueError, match="rewardbench/x/7"):
    critic_judge([ex], k=1)
