"""RMB Best-of-N for pairwise systems: n-1 best-vs-other pairs, all of which must be right (paper §5.1)."""

import numpy as np
import pytest

from experiments import eval as eval_experiment
from grm_jax.data.example import PreferenceExample
from grm_jax.eval.pairs import bon_pairs
from grm_jax.judges.model_judge import Judgements, judge_texts_to_arrays
from grm_jax.stages import eval as eval_stage

# One RMB Best-of-N list of 4 responses whose best is the third (index 2).
BON = PreferenceExample("q", ("w", "x", "best", "y"), rewards=(0.2, 0.5, 0.9, 0.1), source="rmb/Helpfulness/bon_a",
                        category="Helpfulness/BoN", id="7")


def test_a_list_becomes_best_vs_each_other_pair():
  p = bon_pairs([BON], seed=0)
  assert [ex.responses for ex in p.pairs] == [("best", "w"), ("best", "x"), ("best", "y")]
  assert [ex.id for ex in p.pairs] == ["7#pair0", "7#pair1", "7#pair3"]
  assert all(ex.best == 0 and ex.source == BON.source and ex.category == BON.category for ex in p.pairs)
  pair = PreferenceExample("q", ("a", "b"), rewards=(0.0, 1.0), source="rmb/Helpfulness/pair_a", id="1")
  p = bon_pairs([pair, BON], seed=0)
  assert p.pairs[0] is pair and p.spans == ((0, 1), (1, 4)) and p.split == (False, True) and p.num_split == 1


def test_fold_right_only_if_every_pair_is_right():
  p = bon_pairs([BON], seed=0)
  # Pair votes [best, other]: the best wins all three -> its row's unique argmax is the best.
  got = p.fold(np.array([[3.0, 1.0], [2.0, 0.0], [4.0, 0.0]]))
  np.testing.assert_array_equal(got, [[0.0, 0.0, 1.0, 0.0]])
  # It loses the pair against "x": x is the only response with a vote.
  got = p.fold(np.array([[3.0, 1.0], [1.0, 3.0], [4.0, 0.0]]))
  np.testing.assert_array_equal(got, [[0.0, 1.0, 0.0, 0.0]])
  # A tied pair is decided by its draw (draw < 0.5: the best).
  tied = np.array([[3.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
  assert p.fold(tied)[0, 2] == float(p.draws[1] < 0.5)
  with pytest.raises(ValueError, match="one row per judged pair"):
    p.fold(np.zeros((2, 2)))


def _scripted_pair_judge(pairs, picks, k=3):
  """Judgements of the judge template on each pair: sample s of pair i names `picks[i]` (1 = the best, 2 = the other)
  whatever the shown order (the perm maps the pick back)."""
  texts, perms = [], []
  rng = np.random.default_rng(0)
  for i, _ in enumerate(pairs):
    row_p = [tuple(int(x) for x in rng.permutation(2)) for _ in range(k)]
    texts.append([f"Analysis: a.\nScores: \\boxed{{{p.index(picks[i] - 1) + 1}}}" for p in row_p])
    perms.append(row_p)
  templates = ["judge"] * len(pairs)
  scores, valid, mask, perm_arr = judge_texts_to_arrays(texts, perms, k=k, templates=templates)
  B = len(pairs)
  return Judgements(scores=scores, valid=valid, response_mask=mask, perms=perm_arr, texts=texts,
                    tokens=[[[5]] * k] * B, logprobs=[[[-1.0]] * k] * B, prompt_ids=[[[1]] * k] * B,
                    prompt_tokens=np.ones((B, k), np.int32), generated_tokens=np.ones((B, k), np.int32),
                    stopped=np.ones((B, k), bool), templates=templates)


@pytest.mark.parametrize("picks, right", [((1, 1, 1), 1.0), ((1, 2, 1), 0.0), ((2, 2, 2), 0.0)])
def test_rmb_bon_item_scored_by_its_pairs(picks, right):
  """A hand-built 4-response RMB item judged by a scripted pairwise judge: right only when all 3 pairs are."""
  c = eval_experiment.get_config("smoke")
  c.eval.bootstrap_resamples = 0
  protocol = eval_stage.pair_protocols({"rmb": [BON], "synthetic": [BON]}, c)["rmb"]
  assert list(eval_stage.pair_protocols({"synthetic": [BON]}, c)) == []  # only RMB is judged as pairs
  j = _scripted_pair_judge(protocol.pairs, picks)
  meta = np.linspace(-1.0, 1.0, 9).reshape(3, 3)  # a meta RM's logits per pair sample: MetaRM@k folds the same way
  d = eval_stage.evaluate_dataset("rmb", [BON], j, c, meta, protocol=protocol)
  for column in ("k1", "voting", "meta"):
    assert d["metrics"][column]["Helpfulness/BoN"] == right
    assert d["metrics"][column]["overall_expected"] == right
  assert d["outcomes"]["voting"] == [right] and d["outcomes"]["ids"] == ["rmb/Helpfulness/bon_a/7"]
  assert d["pair_protocol"] == {"lists_split": 1, "pairs_judged": 3}
  assert all(row["voting"] == right for row in d["scaling"])
