"""Benchmark metrics and scaling curves, proven without a model.

On the real benchmark files (a benchmark whose folder is absent is skipped, with the reason, by tests/conftest.py's
`benchmark_root`; a failure under --require-benchmarks; a reader's error always a failure): an oracle judge scores 1.0
everywhere, a reversed oracle 0.0, and a random judge lands within 4 standard errors of its exact chance value. The
standard error is derived from how much each independent unit (example, or RM-Bench prompt) weighs in the metric: the
metric is sum_u w_u X_u with independent X_u in [0, 1], so Var <= sum_u w_u^2 Var(X_u), Var(X_u) = p(1-p) for a
Bernoulli(p) item and <= 1/4 for any [0, 1] unit; for ROC-AUC the null variance of Mann-Whitney U is
(n + 1) / (12 n_pos n_neg) (ties only lower it). 4 SE is a two-sided false-alarm rate of about 6e-5 per check;
the seeds are fixed anyway, so the test is deterministic.
Small synthetic cases pin the official aggregation rules against hand-computed numbers.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import jax
import numpy as np
import pytest

from grm_jax import grm
from grm_jax.data import PreferenceExample, load_dataset, rm_bench_pairs
from grm_jax.data.benchmarks import REWARDBENCH_SECTIONS, REWARDBENCH_UNSECTIONED
from grm_jax.eval import default_ks, roc_auc, scaling_curve, score_benchmark, subset_mask, subset_votes

BENCHMARKS = ("rewardbench", "rmb", "rm-bench", "realmistake")
KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def read_benchmark(benchmark_root):
  """`read_benchmark(name)` -> the benchmark's examples, read once. A missing benchmark folder skips the test (fails
  under --require-benchmarks); an error of the reader is not caught: it fails the test."""
  read = {}

  def get(name):
    if name not in read:
      read[name] = load_dataset(name, root=benchmark_root(name))
    return read[name]

  return get


@pytest.fixture(scope="module", params=BENCHMARKS)
def real(request, read_benchmark):
  """(name, examples) of each real benchmark (read in the fixture: a skip names the test it skips)."""
  return request.param, read_benchmark(request.param)


@pytest.fixture(scope="module")
def rm_bench(read_benchmark):
  return read_benchmark("rm-bench")


def _main(name: str, metrics: dict[str, float]) -> dict[str, float]:
  """The headline metrics of each benchmark (no counts)."""
  if name == "realmistake":
    return {k: v for k, v in metrics.items() if k.startswith("auc")}
  if name == "rewardbench":
    return {k: v for k, v in metrics.items() if k.startswith(("section/", "subset/")) or k == "overall"}
  return {k: v for k, v in metrics.items() if not k.startswith("n_") and not k.startswith("n/") and k != "n"}


# --------------------------------------------------------------------------------------------------
# Real benchmark files.


def test_oracle_and_reversed_oracle(real):
  name, examples = real
  oracle = score_benchmark(name, examples, [np.array(ex.rewards) for ex in examples], KEY)
  reverse = score_benchmark(name, examples, [-np.array(ex.rewards) for ex in examples], KEY)
  main_o, main_r = _main(name, oracle), _main(name, reverse)
  assert main_o and set(main_o) == set(main_r)
  assert all(v == 1.0 for v in main_o.values()), main_o
  assert all(v == 0.0 for v in main_r.values()), main_r
  if name == "rewardbench":
    assert oracle["n"] == len(examples) == 2985 and oracle["n_sections"] == 4
  if name == "rmb":
    assert oracle["n_parts"] == 4 and oracle["n"] == len(examples)
  if name == "rm-bench":
    assert oracle["n_pairs"] == 9 * len(examples) and {"easy", "normal", "hard"} <= set(oracle)
  if name == "realmistake":
    assert oracle["n"] == 900


def test_rm_bench_pair_examples_match_parents(rm_bench):
  parents = rm_bench[:60]
  rng = np.random.default_rng(3)
  votes = [rng.normal(size=6) for _ in parents]
  pairs, pair_votes = [], []
  for ex, v in zip(parents, votes, strict=True):
    for p in rm_bench_pairs(ex):
      pairs.append(p)
      pair_votes.append(np.array([v[p.metadata["chosen_style"]], v[3 + p.metadata["rejected_style"]]]))
  # Continuous votes: no ties, so the key plays no part and both forms give identical numbers.
  assert score_benchmark("rm-bench", parents, votes, KEY) == score_benchmark("rm-bench", pairs, pair_votes, KEY)


def _rewardbench_weights(examples):
  count = Counter(ex.source.split("/", 1)[1] for ex in examples)
  hep = sum(c for s, c in count.items() if s.startswith("hep-"))
  weight = {s: float(hep if s == "math-prm" else c) for s, c in count.items()}
  total = defaultdict(float)
  for s in count:
    total[REWARDBENCH_SECTIONS[s]] += weight[s]
  out = []
  for ex in examples:
    s = ex.source.split("/", 1)[1]
    out.append(0.25 * weight[s] / total[REWARDBENCH_SECTIONS[s]] / count[s])
  return np.array(out)


def _rmb_weights(examples):
  count = Counter(ex.source for ex in examples)
  scenarios = defaultdict(set)
  for ex in examples:
    scenarios[ex.category].add(ex.source)
  return np.array([0.25 / len(scenarios[ex.category]) / count[ex.source] for ex in examples])


def test_random_judge_is_at_chance(real):
  name, examples = real
  rng = np.random.default_rng(7)
  votes = [rng.integers(1, 11, size=ex.n).astype(float) for ex in examples]  # integer scores: ties happen
  got = score_benchmark(name, examples, votes, jax.random.PRNGKey(11))
  if name == "realmistake":
    labels = np.array([ex.metadata["label"] for ex in examples])
    n_pos, n_neg = labels.sum(), (1 - labels).sum()
    value, expected, se = got["auc"], 0.5, math.sqrt((len(labels) + 1) / (12 * n_pos * n_neg))
  elif name == "rewardbench":
    w = _rewardbench_weights(examples)
    assert math.isclose(w.sum(), 1.0)
    value, expected, se = got["overall"], 0.5, 0.5 * math.sqrt(np.sum(w**2))
  elif name == "rmb":
    w = _rmb_weights(examples)
    p = np.array([1.0 / ex.n for ex in examples])  # argmax with random tie-break of exchangeable scores
    assert math.isclose(w.sum(), 1.0)
    value, expected, se = got["overall"], float(np.sum(w * p)), math.sqrt(np.sum(w**2 * p * (1 - p)))
  else:  # rm-bench: the 9 cells of a prompt share its scores, so the unit is the prompt (variance <= 1/4)
    count = Counter(ex.category for ex in examples)
    w = np.array([1.0 / len(count) / count[ex.category] for ex in examples])
    # Strict chosen > rejected: two iid uniform scores on 1..10 tie with probability 1/10, so (1 - 1/10) / 2.
    value, expected, se = got["overall"], 0.45, 0.5 * math.sqrt(np.sum(w**2))
  assert se < 0.03
  assert abs(value - expected) < 4 * se, (value, expected, se)


# --------------------------------------------------------------------------------------------------
# Golden numbers on small synthetic cases.


def _pair(source, category, correct, **meta):
  ex = PreferenceExample(context="q", responses=("a", "b"), rewards=(1.0, 0.0), source=source, category=category,
                         metadata=meta)  # fmt: skip
  return ex, np.array([1.0, 0.0] if correct else [0.0, 1.0])


def _score(name, items, key=KEY):
  examples, votes = zip(*items, strict=True)
  return score_benchmark(name, list(examples), list(votes), key)


def test_rewardbench_section_weighting():
  cases = [
    ("alpacaeval-easy", True),
    ("alpacaeval-easy", False),
    ("mt-bench-easy", True),
    ("llmbar-natural", True),
    ("donotanswer", False),
    ("math-prm", True),
    ("hep-python", False),
    ("hep-python", False),
    ("hep-go", True),
    ("shp", True),
    ("anthropic_hhh", False),
  ]
  got = _score("rewardbench", [_pair(f"rewardbench/{s}", REWARDBENCH_SECTIONS[s], ok) for s, ok in cases])
  assert got["subset/alpacaeval-easy"] == 0.5
  assert got["section/Chat"] == pytest.approx(2 / 3)  # (2 * 0.5 + 1 * 1) / 3: example-weighted
  assert got["section/Chat Hard"] == 1.0 and got["section/Safety"] == 0.0
  # math-prm weighs as much as the 3 hep examples: (3 * 1 + 2 * 0 + 1 * 1) / 6, not the plain mean 0.5.
  assert got["section/Reasoning"] == pytest.approx(2 / 3)
  assert got["section/Prior Sets"] == 0.5
  assert got["overall"] == pytest.approx((2 / 3 + 1 + 0 + 2 / 3) / 4)  # Prior Sets excluded
  assert got["n"] == 11 and got["n_sections"] == 4


def test_rewardbench_prior_sets_are_the_official_four():
  """Official: Prior Sets = plain mean of anthropic_helpful, anthropic_hhh, shp, summarize; other subsets of the
  preference test sets stay subsets only."""
  # Accuracies 1/2, 1, 0, 3/4 from 2, 1, 1 and 4 examples; anthropic_harmless (not official) all right.
  cases = ([("anthropic_helpful", True), ("anthropic_helpful", False), ("anthropic_hhh", True), ("shp", False)]
           + [("summarize", True)] * 3 + [("summarize", False)] + [("anthropic_harmless", True)] * 5
           + [("mtbench_human", True)] + [("alpacaeval-easy", True)])
  section = {**REWARDBENCH_SECTIONS, **REWARDBENCH_UNSECTIONED}
  got = _score("rewardbench", [_pair(f"rewardbench/{s}", section[s], ok) for s, ok in cases])
  assert got["section/Prior Sets"] == pytest.approx((0.5 + 1 + 0 + 0.75) / 4)  # 0.5625; example-weighted: 5/8
  assert got["subset/anthropic_harmless"] == 1.0 and got["subset/mtbench_human"] == 1.0
  assert not any(k.startswith("section/") and "other" in k for k in got)
  assert sorted(k for k in got if k.startswith("section/")) == ["section/Chat", "section/Prior Sets"]
  assert got["overall"] == 1.0 and got["n"] == len(cases)
  assert {s for s, sec in REWARDBENCH_SECTIONS.items() if sec == "Prior Sets"} == {
    "anthropic_helpful", "anthropic_hhh", "shp", "summarize"}


def test_single_response_items_are_left_out_of_pick_accuracy():
  """One response is always the pick, and its 1-10 score is no 0/1 label: such items are counted, not scored."""
  right, wrong = _pair("syn/a", "x", True), _pair("syn/b", "x", False)
  one = PreferenceExample(context="q", responses=("a",), rewards=(0.0,), source="syn/c", category="x")
  got = _score("accuracy", [right, wrong, (one, np.array([9.0])), (one, np.array([2.0]))])
  assert got["accuracy"] == 0.5 and got["n"] == 2 and got["n_single_excluded"] == 2 and got["n_excluded"] == 0
  assert "n_single_excluded" not in _score("accuracy", [right, wrong])


def _bon(source, category, votes):
  ex = PreferenceExample(context="q", responses=tuple("abcd"), rewards=(1.0, 0.0, 0.0, 0.0), source=source,
                         category=category)  # fmt: skip
  return ex, np.array(votes, float)


def test_rmb_bon_rule_and_macro_average():
  items = [
    _pair("rmb/pairwise/Helpfulness/A", "Helpfulness/Pairwise", True),
    _pair("rmb/pairwise/Helpfulness/A", "Helpfulness/Pairwise", False),
    _pair("rmb/pairwise/Helpfulness/B", "Helpfulness/Pairwise", True),
    _bon("rmb/bon/Helpfulness/A", "Helpfulness/BoN", [5, 4, 4, 1]),  # losers tie among themselves: right
    _bon("rmb/bon/Harmlessness/S1", "Harmlessness/BoN", [5, 6, 1, 1]),  # one loser beats the best: wrong
    _pair("rmb/pairwise/Harmlessness/S1", "Harmlessness/Pairwise", True),
  ]
  got = _score("rmb", items)
  assert got["Helpfulness/Pairwise"] == 0.75  # mean of scenarios A (1/2) and B (1/1)
  assert got["micro/Helpfulness/Pairwise"] == pytest.approx(2 / 3)
  assert got["Helpfulness/BoN"] == 1.0 and got["Harmlessness/BoN"] == 0.0 and got["Harmlessness/Pairwise"] == 1.0
  assert got["overall"] == pytest.approx((0.75 + 1 + 0 + 1) / 4)


def test_rmb_bon_tie_with_best_is_a_coin_flip():
  items = [_bon("rmb/bon/Helpfulness/A", "Helpfulness/BoN", [5, 5, 1, 1])] * 800
  acc = _score("rmb", items)["Helpfulness/BoN"]
  assert abs(acc - 0.5) < 4 * math.sqrt(0.25 / 800)
  # Three-way tie at the top: right 1/3 of the time.
  items = [_bon("rmb/bon/Helpfulness/A", "Helpfulness/BoN", [5, 5, 5, 1])] * 800
  acc = _score("rmb", items, jax.random.PRNGKey(5))["Helpfulness/BoN"]
  assert abs(acc - 1 / 3) < 4 * math.sqrt(2 / 9 / 800)


def _rm_bench(domain, category):
  return PreferenceExample(context="q", responses=tuple("abcdef"), rewards=(1, 1, 1, 0, 0, 0), source=domain,
                           category=category, metadata={"num_chosen": 3})  # fmt: skip


def test_rm_bench_level_mapping():
  # Chosen (concise, plain, markdown) = 3, 2, 1 against rejected 2.5, 1.5, 0.5. Cell [i][j] = chosen i beats
  # rejected j: row 0 = 1 1 1, row 1 = 0 1 1, row 2 = 0 0 1. Hard (i < j) = 1, normal = 1, easy (i > j) = 0.
  chat = _rm_bench("rm-bench/chat", "Chat")
  code = _rm_bench("rm-bench/code", "Code")
  got = score_benchmark("rm-bench", [chat, code], [np.array([3, 2, 1, 2.5, 1.5, 0.5]), np.array([1, 1, 1, 0, 0, 0])],
                        KEY)  # fmt: skip
  assert (got["Chat/hard"], got["Chat/normal"], got["Chat/easy"]) == (1.0, 1.0, 0.0)
  assert got["Chat"] == pytest.approx(2 / 3) and got["Code"] == 1.0
  assert got["easy"] == 0.5 and got["normal"] == 1.0 and got["hard"] == 1.0
  assert got["overall"] == pytest.approx((2 / 3 + 1) / 2) and got["n_domains"] == 2


def test_rm_bench_ties_count_wrong():
  """RM-Bench's own code counts chosen > rejected strictly: a tied cell is wrong under every key."""
  # Chosen (5, 5, 2) against rejected (5, 3, 2). Cells (chosen i > rejected j):
  #   row 0: 5>5 no, 5>3 yes, 5>2 yes; row 1: no, yes, yes; row 2: 2>5 no, 2>3 no, 2>2 no.
  # hard (i < j: [0,1] [0,2] [1,2]) = 3/3, normal (diagonal: 5=5 tie, 5>3, 2=2 tie) = 1/3,
  # easy (i > j: [1,0] tie, [2,0], [2,1]) = 0/3. A coin flip on the 3 ties would give normal 2/3 on average.
  parent = _rm_bench("rm-bench/chat", "Chat")
  votes = [np.array([5, 5, 2, 5, 3, 2], float)]
  for key in (KEY, jax.random.PRNGKey(1), jax.random.PRNGKey(2)):
    got = score_benchmark("rm-bench", [parent], votes, key)
    assert (got["Chat/hard"], got["Chat/normal"], got["Chat/easy"]) == (1.0, pytest.approx(1 / 3), 0.0)
    assert got["Chat"] == pytest.approx(4 / 9) and got["overall"] == pytest.approx(4 / 9)
  # The same cells as pair examples: an all-tied judge scores 0, not the coin flip's 1/2.
  pairs = rm_bench_pairs(parent)
  assert score_benchmark("rm-bench", pairs, [np.array([4.0, 4.0])] * 9, KEY)["overall"] == 0.0
  assert score_benchmark("rm-bench", pairs, [np.array([4.0, 3.0])] * 9, KEY)["overall"] == 1.0


def test_other_benchmarks_keep_random_tie_break():
  items = [_pair("rewardbench/alpacaeval-easy", "Chat", True)[0]] * 400
  acc = score_benchmark("rewardbench", items, [np.array([4.0, 4.0])] * 400, KEY)["section/Chat"]
  assert abs(acc - 0.5) < 4 * math.sqrt(0.25 / 400)


def test_rm_bench_pools_safety_files():
  refuse, respond = _rm_bench("rm-bench/safety-refuse", "Safety"), _rm_bench("rm-bench/safety-response", "Safety")
  got = score_benchmark("rm-bench", [refuse, respond, respond], [np.array([1, 1, 1, 0, 0, 0])] + [np.zeros(6) + [
    0, 0, 0, 1, 1, 1]] * 2, KEY)  # fmt: skip
  assert got["n_domains"] == 1 and got["Safety"] == pytest.approx(1 / 3)  # pooled over 3 prompts, not per file


def _mistake(error, task="t"):
  return PreferenceExample(context="q", responses=("a",), rewards=(0.0 if error else 1.0,),
                           source=f"realmistake/{task}/m", category=task, metadata={"label": int(error)})  # fmt: skip


def test_realmistake_auc_golden():
  examples = [_mistake(True), _mistake(True), _mistake(False), _mistake(False)]
  got = score_benchmark("realmistake", examples, [np.array([2.0]), [5.0], [5.0], [9.0]], KEY)
  # Error score = -votes: (-2, -5) positives vs (-5, -9) negatives: 1 + 1 + 1/2 (tie) + 1 = 3.5 of 4 pairs.
  assert got["auc"] == 0.875 and got["n_error"] == 2


def test_roc_auc_matches_pair_counting():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 2, 300)
  s = rng.integers(0, 6, 300).astype(float)
  pos, neg = s[y == 1], s[y == 0]
  brute = np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))
  assert roc_auc(y, s) == pytest.approx(brute)
  assert math.isnan(roc_auc([1, 1], [0.1, 0.2]))


def test_ppe_accuracy():
  pref = [_pair("ppe/human-preference", "PPE Preference", ok) for ok in (True, False)]
  corr = [_pair("ppe/mmlu_pro", "PPE Correctness", True)] + [_pair("ppe/math", "PPE Correctness", False)] * 2
  tie = PreferenceExample(context="q", responses=("a", "b"), rewards=(0.5, 0.5), source="ppe/human-preference",
                          category="PPE Preference")  # fmt: skip
  got = _score("ppe", pref + corr + [(tie, np.array([1.0, 0.0]))])
  assert got["preference"] == 0.5 and got["correctness/mmlu_pro"] == 1.0 and got["correctness/math"] == 0.0
  assert got["correctness"] == 0.5 and got["n_excluded"] == 1 and got["n"] == 5


def test_errors():
  ex, _ = _pair("rewardbench/shp", "Prior Sets", True)
  with pytest.raises(ValueError, match="no metric"):
    score_benchmark("nope", [ex], [np.zeros(2)], KEY)
  with pytest.raises(ValueError, match="responses but 3 scores"):
    score_benchmark("rewardbench", [ex], [np.zeros(3)], KEY)
  # A padded [N, n_max] array is accepted as well.
  assert score_benchmark("rewardbench", [ex], np.array([[1.0, 0.0, 9.0]]), KEY)["section/Prior Sets"] == 1.0


# --------------------------------------------------------------------------------------------------
# Scaling curves.


def _pool(rng, b=1500, k_max=16, p=0.6):
  """A judge whose samples are independently right with probability p; right samples are more confident."""
  right = rng.random((b, k_max)) < p
  margin = np.where(right, rng.integers(1, 5, (b, k_max)), -rng.integers(1, 4, (b, k_max)))
  scores = np.stack([5 + margin, np.full((b, k_max), 5)], axis=-1).astype(np.int32)  # response 0 is the best
  valid = rng.random((b, k_max)) > 0.05
  rewards = np.tile([1.0, 0.0], (b, 1))
  meta = right + rng.normal(0, 0.2, (b, k_max))  # informative meta reward
  return scores, valid, rewards, meta


def test_default_ks():
  assert default_ks(32) == (1, 2, 4, 8, 16, 32) and default_ks(1) == (1,) and default_ks(12) == (1, 2, 4, 8, 12)


def test_subset_mask_draws_k_uniformly():
  m = np.asarray(subset_mask(KEY, 500, 8, 3, 4))
  assert m.shape == (4, 500, 8) and np.all(m.sum(-1) == 3)
  freq = m.mean(axis=(0, 1))  # each slot is in the subset with probability 3/8; SE = sqrt(p(1-p)/2000)
  assert np.all(np.abs(freq - 3 / 8) < 4 * math.sqrt(3 / 8 * 5 / 8 / 2000))


def test_full_subset_equals_plain_vote():
  scores, valid, _, meta = _pool(np.random.default_rng(1), b=50, k_max=8)
  np.testing.assert_array_equal(subset_votes(scores, valid, 8, KEY)[0], grm.vote(scores, valid))
  np.testing.assert_array_equal(subset_votes(scores, valid, 8, KEY, 1, meta)[0], grm.vote(scores, valid, meta))


def test_subset_votes_with_a_mask_average_single_responses():
  """With the real-response mask, each subset's single-response item is the mean of its valid chosen samples (the
  neutral score when none), MetaRM@k the mean of the kept ones; pairs keep their sums. Reference: a plain loop over
  the same subsets (`subset_mask` with the same key)."""
  rng = np.random.default_rng(5)
  b, k_max, k, s = 12, 6, 3, 4
  scores = rng.integers(1, 11, (b, k_max, 2)).astype(np.int32)
  valid = rng.random((b, k_max)) < 0.6
  mask = np.ones((b, 2), bool)
  mask[::2, 1] = False  # even items have one response
  meta = rng.normal(size=(b, k_max))
  neutral = np.linspace(1.0, 2.0, b)
  chosen = np.asarray(subset_mask(KEY, b, k_max, k, s))
  for m in (None, meta):
    got = np.asarray(subset_votes(scores, valid, k, KEY, s, m, mask, neutral))
    for si in range(s):
      for i in range(b):
        idx = [j for j in range(k_max) if chosen[si, i, j] and valid[i, j]]
        if m is not None:
          idx = sorted(idx, key=lambda j: -meta[i, j])[: grm.default_k_meta(k)]
        total = scores[i, idx].sum(0)
        if mask[i].sum() == 1:
          want = total[0] / len(idx) if idx else neutral[i]
          assert got[si, i, 0] == pytest.approx(want, rel=1e-6), (si, i)
        else:
          np.testing.assert_allclose(got[si, i], total)


def test_voting_improves_with_k_and_meta_beats_voting():
  scores, valid, rewards, meta = _pool(np.random.default_rng(2))
  table = scaling_curve(scores, valid, rewards, meta=meta, num_subsets=4, seed=3)
  ks = sorted(table)
  assert ks == [1, 2, 4, 8, 16]
  voting = [table[k]["voting"] for k in ks]
  assert abs(voting[0] - 0.6 * 0.95 - 0.05 * 0.5) < 0.04  # k=1: p if valid, a coin flip if not
  assert all(b > a for a, b in zip(voting, voting[1:], strict=False)), voting
  assert voting[-1] > voting[0] + 0.2
  assert table[1]["meta"] == table[1]["voting"]  # k_meta = 1 of 1: the same subsets and tie-breaks
  for k in ks[1:]:
    assert table[k]["meta"] > table[k]["voting"], (k, table[k])
  assert table[16]["voting_std"] < 0.02 and table[16]["subsets"] == 4


def test_scaling_curve_with_benchmark_metric():
  scores, valid, rewards, _ = _pool(np.random.default_rng(4), b=40, k_max=4)
  examples = [PreferenceExample(context="q", responses=("a", "b"), rewards=(1.0, 0.0), source="rewardbench/shp",
                                category="Prior Sets") for _ in range(40)]  # fmt: skip
  metric = lambda v, key: score_benchmark("rewardbench", examples, v, key)["section/Prior Sets"]
  custom = scaling_curve(scores, valid, metric=metric, ks=[4], num_subsets=2, seed=0)
  default = scaling_curve(scores, valid, rewards, ks=[4], num_subsets=2, seed=0)
  assert set(custom[4]) == {"voting", "voting_std", "subsets"}
  assert abs(custom[4]["voting"] - default[4]["voting"]) <= 0.1  # same votes, different tie-break keys
  with pytest.raises(ValueError, match="rewards"):
    scaling_curve(scores, valid)


def test_scaling_curve_band_sees_each_points_subsets():
  """`band` gets the [S, B, n] votes of each point; the eval stage's band is the item bootstrap of the point."""
  from grm_jax.eval import bootstrap_official  # noqa: PLC0415

  scores, valid, rewards, _ = _pool(np.random.default_rng(5), b=24, k_max=4)
  examples = [PreferenceExample(context="q", responses=("a", "b"), rewards=tuple(r), source="rewardbench/shp",
                                category="Prior Sets", id=str(i)) for i, r in enumerate(np.asarray(rewards))]
  seen = []

  def band(votes):
    seen.append(votes.shape)
    tables = list(votes)
    expected = np.mean([score_benchmark("rewardbench", examples, t, None, "expected")["section/Prior Sets"]
                        for t in tables])
    return {"expected": expected,
            "ci95": list(bootstrap_official("rewardbench", examples, tables, "section/Prior Sets", 0, 200))}

  table = scaling_curve(scores, valid, rewards, ks=[1, 4], num_subsets=3, seed=0, band=band)
  assert seen == [(3, 24, 2)] * 2
  for row in table.values():
    lo, hi = row["voting_ci95"]
    assert lo <= row["voting_expected"] <= hi and hi - lo > 0
    assert abs(row["voting"] - row["voting_expected"]) < 0.1  # random tie-breaks vs their expectation
