"""Intervals and tie-expected metrics: known values, hand-computed cases, and the random mode's mean."""

import math

import jax
import numpy as np
import pytest

from grm_jax.data import PreferenceExample
from grm_jax.eval import (
  auc_standard_error,
  bootstrap_interval,
  bootstrap_official,
  comparison,
  example_correct,
  official_with_interval,
  roc_auc,
  score_benchmark,
  wilson_interval,
)


def pair(i, source="rewardbench/alpacaeval-easy", best=0, n=2):
  rewards = tuple(1.0 if r == best else 0.0 for r in range(n))
  return PreferenceExample("q", tuple("abcdefgh"[:n]), rewards, source=source, id=str(i))


# --------------------------------------------------------------------------------------------------
# Wilson score interval.


@pytest.mark.parametrize(("k", "n", "want"), [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)),
                                              (10, 10, (0.7225, 1.0)), (5, 10, (0.2366, 0.7634))])
def test_wilson_known_values(k, n, want):
  lo, hi = wilson_interval(k, n)
  assert (lo, hi) == pytest.approx(want, abs=5e-5)


def test_wilson_edges_and_fractional_successes():
  assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
  assert all(math.isnan(x) for x in wilson_interval(0, 0))
  # 16 of 32 pairs all tied: 16 tie-expected successes, the same interval as 16 sampled ones.
  assert wilson_interval(32 * 0.5, 32) == wilson_interval(16, 32)
  lo, hi = wilson_interval(7.5, 10)
  assert wilson_interval(7, 10)[0] < lo < wilson_interval(8, 10)[0]
  assert wilson_interval(8, 10, confidence=0.99)[0] < 0.4902
  with pytest.raises(ValueError, match="successes"):
    wilson_interval(11, 10)


# --------------------------------------------------------------------------------------------------
# Bootstrap.


def test_bootstrap_is_deterministic_and_brackets_the_mean():
  data = np.array([1.0] * 20 + [0.0] * 12)

  def mean(idx):
    return data[idx].mean()

  a = bootstrap_interval(mean, len(data), seed=3, resamples=500)
  assert a == bootstrap_interval(mean, len(data), seed=3, resamples=500)
  normal = np.random.default_rng(0).normal(size=50)  # continuous: another seed moves the quantiles
  assert (bootstrap_interval(lambda idx: normal[idx].mean(), 50, seed=3, resamples=200)
          != bootstrap_interval(lambda idx: normal[idx].mean(), 50, seed=4, resamples=200))
  assert a[0] < data.mean() < a[1]
  # Close to the Wilson interval of 20 / 32 (both about +-0.17 around 0.625).
  assert a == pytest.approx(wilson_interval(20, 32), abs=0.04)


def test_bootstrap_constant_statistic_and_edges():
  assert bootstrap_interval(lambda idx: 0.5, 10, seed=0, resamples=100) == (0.5, 0.5)
  for n, r in ((0, 100), (10, 0)):
    assert all(math.isnan(x) for x in bootstrap_interval(lambda idx: 0.5, n, seed=0, resamples=r))
  # Non-finite resamples (a class missing from an AUC) are dropped; all non-finite -> nan.
  assert all(math.isnan(x) for x in bootstrap_interval(lambda idx: float("nan"), 5, seed=0, resamples=10))


# --------------------------------------------------------------------------------------------------
# Hanley-McNeil standard error.


def test_auc_standard_error_by_hand():
  # A = 0.8, 10 positives, 20 negatives: Q1 = 0.8 / 1.2, Q2 = 2 * 0.64 / 1.8,
  # SE^2 = (0.16 + 9 (Q1 - 0.64) + 19 (Q2 - 0.64)) / 200 = 1.751111 / 200.
  assert auc_standard_error(0.8, 10, 20) == pytest.approx(math.sqrt(1.7511111 / 200), rel=1e-6)
  assert auc_standard_error(0.8, 10, 20) == pytest.approx(0.093571, abs=1e-6)
  assert math.isnan(auc_standard_error(0.5, 0, 5)) and math.isnan(auc_standard_error(float("nan"), 5, 5))
  # It shrinks with more rows and reads 0 at a perfect, well-populated AUC.
  assert auc_standard_error(0.8, 100, 200) < auc_standard_error(0.8, 10, 20)
  assert auc_standard_error(1.0, 10, 10) == 0.0


def test_heldout_metrics_carry_the_auc_standard_error():
  from grm_jax.stages.metarm import heldout_metrics  # noqa: PLC0415

  labels = np.array([1, 1, 1, 0, 0, 0, 0], bool)
  logits = np.array([2.0, 0.5, -1.0, 0.0, -2.0, -3.0, 1.0])
  got = heldout_metrics(logits, labels)
  auc = roc_auc(labels, logits)
  assert got["auc"] == auc and got["auc_se"] == pytest.approx(auc_standard_error(auc, 3, 4))


# --------------------------------------------------------------------------------------------------
# Tie-expected correctness.


def test_tie_expected_correctness_by_hand():
  examples = [
    pair(0),  # all tied pair: 1/2
    pair(1, n=3, best=1),  # 3-way tie containing the best: 1/3
    pair(2, n=3, best=2),  # tie of 0 and 1, best 2 is below: 0
    pair(3, n=3, best=0),  # 2-way tie containing the best: 1/2
    pair(4, n=3, best=2),  # unique argmax = best: 1
    PreferenceExample("q", ("a", "b"), (1.0, 1.0), source="rewardbench/alpacaeval-easy", id="5"),  # no unique best
  ]
  votes = [np.array([0.0, 0.0]), np.array([5.0, 5.0, 5.0]), np.array([7.0, 7.0, 1.0]), np.array([4.0, 1.0, 4.0]),
           np.array([1.0, 2.0, 3.0]), np.array([3.0, 1.0])]
  correct, scorable = example_correct(examples, votes, None, expected=True)
  assert correct.tolist() == pytest.approx([0.5, 1 / 3, 0.0, 0.5, 1.0, 0.0])
  assert scorable.tolist() == [True] * 5 + [False]
  got = score_benchmark("accuracy", examples, votes, None, ties="expected")
  assert got["n"] == 5.0 and got["n_excluded"] == 1.0  # the item without a unique best stays out
  assert got["accuracy"] == pytest.approx((0.5 + 1 / 3 + 0.0 + 0.5 + 1.0) / 5)


def test_all_invalid_judge_scores_exactly_one_over_n():
  examples = [pair(i) for i in range(32)]
  votes = np.zeros((32, 2))  # every sample failed to parse: all-zero votes
  assert score_benchmark("rewardbench", examples, votes, None, ties="expected")["overall"] == 0.5
  draws = [score_benchmark("rewardbench", examples, votes, jax.random.PRNGKey(s))["overall"] for s in range(20)]
  assert len(set(draws)) > 1  # the random tie-break is a lottery around it
  got = official_with_interval("rewardbench", examples, votes, "overall", seed=0, resamples=200)
  assert got == {"overall_expected": 0.5, "overall_ci95": [0.5, 0.5]}  # no item varies: a zero-width interval


def _rewardbench_like(rng):
  subsets = ["alpacaeval-easy", "mt-bench-hard", "refusals-dangerous", "math-prm", "hep-python"]
  examples, votes = [], []
  for i in range(40):
    n = 2 if i % 3 else 4
    ex = pair(i, source=f"rewardbench/{subsets[i % len(subsets)]}", best=int(rng.integers(n)), n=n)
    examples.append(ex)
    votes.append(rng.integers(0, 3, n).astype(float))  # small integers: many ties
  return examples, votes


def test_expected_mode_is_the_mean_over_random_keys():
  examples, votes = _rewardbench_like(np.random.default_rng(0))
  # By hand: per-example expected correctness, then the RewardBench aggregation in random mode fed those values.
  correct, _ = example_correct(examples, votes, None, expected=True)
  assert 0 < np.sum((correct > 0) & (correct < 1))  # the case has ties that matter
  exact = score_benchmark("rewardbench", examples, votes, None, ties="expected")
  draws = [score_benchmark("rewardbench", examples, votes, jax.random.PRNGKey(s)) for s in range(400)]
  for name in ("overall", "section/Chat", "section/Reasoning", "subset/math-prm"):
    mean = np.mean([d[name] for d in draws])
    spread = np.std([d[name] for d in draws]) / math.sqrt(len(draws))
    assert abs(exact[name] - mean) < 4 * spread + 1e-12, name
  # Chat is alpacaeval-easy alone: its value is the plain mean of the expected correctness of those items.
  chat = [c for c, ex in zip(correct, examples, strict=True) if ex.source.endswith("alpacaeval-easy")]
  assert exact["section/Chat"] == pytest.approx(np.mean(chat))
  # Counts do not change with the mode.
  assert {k: v for k, v in exact.items() if k.startswith("n")} == {k: v for k, v in draws[0].items()
                                                                   if k.startswith("n")}


def test_strict_and_auc_benchmarks_accept_the_option_unchanged():
  rmb_pairs = [PreferenceExample("q", ("a", "b"), (1.0, 0.0), source="rm-bench/chat", category="chat", id=str(i),
                                 metadata={"level": "easy", "chosen_style": 0, "rejected_style": 0})
               for i in range(2)]
  votes = [np.array([1.0, 1.0]), np.array([2.0, 1.0])]
  assert score_benchmark("rm-bench", rmb_pairs, votes, None, ties="expected") == score_benchmark(
    "rm-bench", rmb_pairs, votes, None)
  rm = [PreferenceExample("q", ("a",), (float(i % 2),), source="realmistake/math/gpt4", category="math", id=str(i),
                          metadata={"label": i % 2}) for i in range(6)]
  rv = [np.array([float(s)]) for s in (3, 5, 5, 7, 2, 5)]
  assert score_benchmark("realmistake", rm, rv, None, ties="expected") == score_benchmark("realmistake", rm, rv, None)
  with pytest.raises(ValueError, match="ties"):
    score_benchmark("accuracy", rm, rv, None, ties="mean")
  with pytest.raises(ValueError, match="PRNG key"):
    score_benchmark("accuracy", [pair(0)], [np.zeros(2)], None)


# --------------------------------------------------------------------------------------------------
# Bootstrap of a benchmark.


def test_bootstrap_official_linear_path_equals_rescoring():
  examples, votes = _rewardbench_like(np.random.default_rng(1))
  rng = np.random.default_rng(2)
  tables = [votes, [v + rng.integers(0, 2, v.shape) for v in votes]]
  fast = bootstrap_official("rewardbench", examples, tables, "overall", seed=5, resamples=60)
  # The same resampled items, each table rescored in expected mode and averaged: equal by linearity.

  def slow(idx):
    chosen = [examples[i] for i in idx]
    return np.mean([score_benchmark("rewardbench", chosen, [t[i] for i in idx], None, "expected")["overall"]
                    for t in tables])

  assert fast == pytest.approx(bootstrap_interval(slow, len(examples), seed=5, resamples=60), abs=1e-12)
  point = np.mean([score_benchmark("rewardbench", examples, t, None, "expected")["overall"] for t in tables])
  assert fast[0] <= point <= fast[1]


def test_comparison_shows_the_interval():
  metrics = {"k1": {"accuracy": 0.75, "accuracy_expected": 0.74, "accuracy_ci95": [0.6, 0.9]},
             "voting": {"accuracy": 0.8}}
  results = {"policy": "grpo", "config": {"seed": 0, "eval": {"limit": 32, "subsample": "random"}},
             "datasets": {"syn": {"benchmark": "accuracy", "official_metric": "accuracy", "k": 4, "num_items": 32,
                                  "metrics": metrics}}}
  table = comparison.compare([("SPCT GRM", results, False)])
  row = table["datasets"]["syn"][0]
  assert row["k1"] == 0.75 and row["k1_ci95"] == [0.6, 0.9] and "voting_ci95" not in row
  text = "\n".join(comparison.render(table))
  assert "| SPCT GRM | grpo | 32 | 75.0 (60.0–90.0) | 80.0 |" in text
  assert "bootstrap interval over items" in text
